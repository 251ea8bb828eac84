"""PNG charts beside the jobs' reports: the one place that draws, so every report's pictures look alike.

matplotlib runs on the driver only, on numbers already aggregated (never on table rows), with the Agg backend, so a
job draws on a machine without a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 110


def _pyplot():
    """pyplot on the Agg backend (no display); imported on first use so a job that draws nothing never loads it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)   # a job may draw many charts; an open figure keeps its memory
    return path


def confusion_png(path: Path, counts: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> Path:
    """Draw counts[true][predicted] as a heat map with every count written in its cell; rows are true labels,
    columns predicted ones. Cells are shaded by count, so the diagonal (right answers) and the worst confusions
    stand out before anyone reads a number."""
    plt = _pyplot()
    m = np.asarray(counts, dtype=np.int64).reshape(len(labels), len(labels))
    k = len(labels)
    side = min(3.5 + 0.45 * k, 20.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=max(int(m.max()), 1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="rows")
    font = max(5, 10 - k // 6)
    dark = m > m.max() / 2
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{m[i, j]:,}", ha="center", va="center", fontsize=font,
                    color="white" if dark[i, j] else "black")
    rotate = k > 6 or max((len(s) for s in labels), default=0) > 8
    ax.set_xticks(range(k), labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    return _save(fig, path)


def distribution_png(path: Path, names: Sequence[str], counts: Sequence[int], histogram: Sequence[int],
                     title: str, score_label: str, log_scores: bool = False) -> Path:
    """Two panels: rows per predicted label (horizontal bars, in the report table's order, each with its count) and
    the score histogram (``len(histogram)`` equal bins over [0, 1]). ``log_scores``: a log count axis, for
    multi-label scores, where the many near-zero scores would flatten every other bar."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.0, 1.5 + 0.28 * len(names))),
                                      gridspec_kw={"width_ratios": [1.1, 1]})
    pos = np.arange(len(names))
    bars = left.barh(pos, counts, color="tab:blue")
    left.bar_label(bars, labels=[f"{c:,}" for c in counts], fontsize=8, padding=2)
    left.set_yticks(pos, names)
    left.invert_yaxis()
    left.set_xlabel("rows")
    left.set_title("predicted labels")
    left.margins(x=0.15)
    edges = np.linspace(0.0, 1.0, len(histogram) + 1)
    right.bar(edges[:-1], histogram, width=np.diff(edges), align="edge", color="tab:orange", edgecolor="white")
    right.set_xlim(0.0, 1.0)
    right.set_xlabel(score_label)
    right.set_ylabel("scores (log scale)" if log_scores else "rows")
    if log_scores and any(histogram):
        right.set_yscale("log")
    right.set_title("score histogram")
    fig.suptitle(title)
    return _save(fig, path)
