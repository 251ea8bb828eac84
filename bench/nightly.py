"""Nightly operations, measured: an incremental run against a full run on the same input, and the embed job on the
2-worker standalone cluster against local[2,4], in one run.

    python bench/nightly.py [--rows 50000 --cluster-rows 50000]     # ~35 minutes on 2 cores; needs ../shared/data

(1) Day 1: a full run over --rows GoEmotions comments. Day 2: 2% of texts changed, 1% new ids, 1% deleted; the
    incremental run (output.mode=incremental) against a full run of the same day-2 input: seconds, ratio (bar <=
    0.10), and whether the two tables are equal (ids, codes, every column).
(2) The embed job on the cluster (jobs/cluster.py: master + 2 workers x 1 core, the project as a wheel) against
    local[2,4] on the same --cluster-rows texts, both started cold as a nightly schedule starts them (a fresh
    `python -m jobs.embed` process against spark-submit): rows/s from each run's manifest (bar >= 0.8x), and each
    command's wall-clock seconds beside it (bench/timing.py's ``once``: cold runs are not repeated). The cluster pays
    a fixed ~25 s more (executor JVMs and Python workers start after the application registers), so its ratio grows
    with the corpus.
Writes out/nightly/report.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, require_data  # noqa: E402  (path, offline env)

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from jobs import cluster, embed  # noqa: E402
from jobs.common import load_config  # noqa: E402
from timing import once  # noqa: E402

OUT = ROOT / "out" / "nightly"


def corpus(n: int) -> dict[str, list]:
    d = require_data() / "goemotions"
    parts = [pq.read_table(d / f"{s}.parquet", columns=["id", "text"]) for s in ("train", "validation", "test")]
    return pa.concat_tables(parts).to_pydict() if n >= 54_000 else pa.concat_tables(parts).slice(0, n).to_pydict()


def run(src: Path, out: Path, *more: str) -> dict:
    return embed.run(load_config(embed.EmbedConfig, str(ROOT / "conf/embed.yaml"),
                                 [f"input.path={src}", f"output.path={out}", *more]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--cluster-rows", type=int, default=50_000)
    args = p.parse_args()
    everything = corpus(args.rows + args.rows // 100)
    n = args.rows
    lines = ["# Nightly runs", "", f"`python bench/nightly.py --rows {n} --cluster-rows {args.cluster_rows}`", ""]
    with tempfile.TemporaryDirectory(dir=ROOT / "out") as tmp:
        tmp = Path(tmp)
        day1 = {k: v[:n] for k, v in everything.items()}
        day2 = {k: list(v) for k, v in everything.items()}
        changed = range(0, n, 50)                                  # 2%
        for i in changed:
            day2["text"][i] += " (edited)"
        deleted = set(range(25, n, 100))                           # 1%
        keep = [i for i in range(len(day2["id"])) if i not in deleted]   # rows n.. are the 1% new ids
        day2 = {k: [v[i] for i in keep] for k, v in day2.items()}
        pq.write_table(pa.table(day1), tmp / "day1.parquet")
        pq.write_table(pa.table(day2), tmp / "day2.parquet")
        run(tmp / "day1.parquet", tmp / "nightly", "output.mode=full")
        inc = run(tmp / "day2.parquet", tmp / "nightly")
        full = run(tmp / "day2.parquet", tmp / "full", "output.mode=full")
        a = pq.read_table(tmp / "nightly" / "embeddings").sort_by("id")
        b = pq.read_table(tmp / "full" / "embeddings").sort_by("id")
        same = a.equals(b)
        ratio = inc["seconds"] / full["seconds"]
        print(f"\n(1) {n:,} texts, day 2: {inc['incremental']}")
        print(f"incremental {inc['seconds']:.1f} s vs full {full['seconds']:.1f} s: ratio {ratio:.3f} (bar <= 0.10); "
              f"tables equal: {same}")
        lines += ["## Incremental vs full", "", "| run | rows encoded | seconds |", "|---|---|---|",
                  f"| full (day 2) | {full['rows']['written']:,} | {full['seconds']:.1f} |",
                  f"| incremental (day 2) | {inc['incremental']['encoded']:,} | {inc['seconds']:.1f} |", "",
                  f"Ratio {ratio:.3f} (bar ≤ 0.10). Day 2 against day 1: {inc['incremental']}. Tables equal (ids, "
                  f"codes, every column): {same}.", ""]
        # (2) cluster vs local
        m = args.cluster_rows
        pq.write_table(pa.table({k: v[:m] for k, v in day1.items()}), tmp / "c.parquet")
        # both cold, as a nightly cron starts them: a fresh `python -m jobs.embed` on local[2,4] vs spark-submit
        wall_local, _ = once(lambda: subprocess.run(
            [sys.executable, "-m", "jobs.embed", "--set", f"input.path={tmp / 'c.parquet'}", "--set",
             f"output.path={tmp / 'local'}", "--set", "output.mode=full"], cwd=ROOT, check=True, capture_output=True))
        local = json.loads((tmp / "local" / "manifest.json").read_text())
        state = tmp / "cluster"
        try:
            url = cluster.up(workers=2, cores=1, memory="4g", port=7277, state=state)
            cmd = cluster.submit_command("jobs/embed.py", ["--config", str(ROOT / "conf/embed.yaml"), "--set",
                                                            f"input.path={tmp / 'c.parquet'}", "--set",
                                                            f"output.path={tmp / 'on_cluster'}", "--set",
                                                            "output.mode=full"], master=url, state=state)
            wall_cluster, _ = once(lambda: subprocess.run(cmd, env=cluster.env(state), check=True,
                                                          capture_output=True))
        finally:
            cluster.down(state)
        on = json.loads((tmp / "on_cluster" / "manifest.json").read_text())
        r_local, r_cluster = m / local["seconds"], m / on["seconds"]
        print(f"\n(2) {m:,} texts: cluster (2 workers x 1 core) {r_cluster:.1f} rows/s vs local[2,4] {r_local:.1f} "
              f"rows/s: ratio {r_cluster / r_local:.2f}x (bar >= 0.8x); wall {wall_cluster:.1f} s vs {wall_local:.1f} s")
        lines += ["## Standalone cluster vs local", "", f"{m:,} texts, both runs started cold; rows/s from each run's "
                  "manifest (Spark session, executors and model loads included), wall seconds of the whole command.",
                  "", "| master | rows/s | wall s |", "|---|---|---|",
                  f"| local[2,4] (`python -m jobs.embed`) | {r_local:.1f} | {wall_local:.1f} |",
                  f"| standalone, 2 workers x 1 core (spark-submit) | {r_cluster:.1f} | {wall_cluster:.1f} |", "",
                  f"Ratio {r_cluster / r_local:.2f}x (bar ≥ 0.8x)."]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwrote {OUT / 'report.md'}")


if __name__ == "__main__":
    main()
