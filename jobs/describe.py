"""A data dictionary for a published table, as Markdown: columns, types and meaning, the feature spec in words, row
counts, quarantine reasons.

    python -m jobs.describe out/embed          # the embed job's output (embeddings + quarantine)
    python -m jobs.describe out/predictions    # the apply job's output
    python -m jobs.describe out/neighbours     # the neighbours job's output
    ... [--output dictionary.md]

Reads only metadata (Parquet footers and the JSON the jobs wrote), never the data, and only of one run: the folder is
resolved to the run it points to once, so a run published meanwhile never mixes in. A manifest that is missing, not
JSON, or whose row counts disagree with the Parquet footers is a ``TableError`` (exit 6).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow.parquet as pq

from encoder.backends import backend_recipe
from encoder.pooling import POOLING_WORDS
from encoder.schema import COLUMN_DOCS, ID, QUARANTINE_REASON_DOCS, TEXT
from encoder.spec import FeatureSpec
from encoder.table import EMBEDDINGS_DIR, PublishedRun, TableError, open_table, published_run, read_manifest
from jobs.errors import InputError, exit_code, one_line
from jobs.tables import check_neighbours_run, check_predictions_run

NEIGHBOUR_DOCS = {
    "query_id": "the query's id in the query table",
    "rank": "1 = nearest; ties in hamming go by id",
    "id": "a row of the embedding table",
    "id_a": "the smaller id of the pair",
    "id_b": "the larger id of the pair",
    "hamming": "bits that differ between the two codes",
    "similarity": "1 - hamming / bits: 1.0 identical codes, about 0.5 unrelated texts",
    "cosine": "rescored similarity: cosine of the query's float feature (a query by id: its stored int8 vector) with "
              "the row's int8 vector; rank follows it (ties by id) among the binary top candidates",
}


def describe(folder: str | Path) -> str:
    """The Markdown data dictionary of a published output folder (embed, apply_heads or neighbours), of the one run
    the folder points to when called."""
    pinned = published_run(folder)
    root = pinned.root
    if (root / EMBEDDINGS_DIR).is_dir():
        return _embeddings(pinned)
    if (root / "predictions").is_dir():
        return _predictions(pinned)
    if (root / "search").is_dir() or (root / "duplicates").is_dir():
        return _neighbours(pinned)
    raise InputError(f"{folder} is not a published embed, apply_heads or neighbours output (no embeddings/, "
                     "predictions/, search/ or duplicates/ folder)")


def spec_in_words(spec: FeatureSpec) -> str:
    """One paragraph an analyst can read: how a text became its code."""
    f = spec.features
    layers = ", ".join(map(str, f.layers))
    combine = "averaged" if f.layer_combine == "mean" else "concatenated"
    pooling = POOLING_WORDS[f.pooling]
    length = (f"long texts are cut into windows of {f.chunk_tokens} tokens every {f.chunk_stride} tokens "
              f"(at most {f.max_chunks}) whose features are averaged" if f.chunks else
              f"texts longer than {f.max_length} tokens are truncated")
    quant = {"binary": (f"binary: bit i is 1 when dimension i is above "
                        f"{'a per-dimension threshold calibrated on a sample' if spec.threshold_mode == 'calibrated' else 'zero'}"
                        f", {spec.dim} bits packed big-endian into {spec.n_bytes} bytes; compare codes by Hamming "
                        "distance (`hamming(a, b)` in `python -m jobs.sql`)"),
             "int8": f"int8: one signed byte per dimension with a per-dimension scale ({spec.n_bytes} bytes)",
             "fp16": f"fp16: little-endian half floats ({spec.n_bytes} bytes)",
             "fp32": f"fp32: little-endian floats ({spec.n_bytes} bytes)"}[spec.quantization]
    rescore = ("" if spec.rescore == "none" else
               f" Beside the code, `embedding_int8` stores the same {spec.dim} features as int8: one signed byte per "
               f"dimension times a per-dimension scale calibrated on a sample of the input (in the spec), "
               f"{spec.rescore_bytes} bytes; search re-ranks Hamming candidates by its cosine (`int8_cosine(a, b)` in "
               "`python -m jobs.sql`, `search.rescore` in the neighbours job). Heads train on the binary code only.")
    engine = ("" if f.backend == "torch" else
              f" run by ONNX Runtime ({'int8 weights' if f.backend == 'onnx_int8' else 'fp32'}, backend "
              f"`{f.backend}`, graph recipe `{backend_recipe(f.backend)}`)")
    return (f"Each text is encoded by **{spec.model['name']}** (weights sha256 `{spec.model['sha256'][:12]}…`)"
            f"{engine}; the "
            f"hidden states of layer(s) {layers} are {combine}, {pooling}"
            f"{', L2-normalised' if f.normalize else ''}; {length}. The {spec.dim} features are stored as "
            f"{quant}.{rescore} Feature spec fingerprint `{spec.fingerprint}`: heads and tables of another "
            "fingerprint are refused.")


def _columns(files, docs: dict[str, str]) -> list[str]:
    schema = pq.read_schema(files[0])
    lines = ["| column | type | meaning |", "|---|---|---|"]
    for f in schema:
        meaning = docs.get(f.name, "passed through from the input unchanged")
        lines.append(f"| `{f.name}` | {f.type} | {meaning} |")
    return lines


def _header(title: str, pinned: PublishedRun, manifest: dict) -> list[str]:
    return [f"# {title}", "", f"`{pinned.path}` → run `{manifest.get('run_id', pinned.run)}`, created "
            f"{manifest.get('created_at', '?')}.", ""]


def _embeddings(pinned: PublishedRun) -> str:
    table = open_table(pinned.root)          # the run folder: spec, manifest and counts checked (TableError)
    root, m, spec = table.root, table.manifest, table.spec
    rows = m.get("rows", {})
    src = m.get("input", {})
    lines = _header("Embedding table", pinned, m)
    lines += ["## Rows", "", "| rows | count |", "|---|---|"]
    lines += [f"| {k} | {v:,} |" for k, v in rows.items()]
    lines += ["", f"Input: `{src.get('path')}` ({src.get('format')}; id column `{src.get('id_column')}`, text column "
              f"`{src.get('text_column')}`).", "", "## Feature spec", "", spec_in_words(spec), "",
              f"## Columns of `embeddings/` ({len(table.files)} Parquet files)", ""]
    lines += _columns(table.files, COLUMN_DOCS)
    quarantine = sorted((root / "quarantine").glob("*.parquet"))
    if quarantine:
        lines += ["", "## Columns of `quarantine/` (one row per held-back input row)", ""]
        lines += _columns(quarantine, COLUMN_DOCS | {ID: "the input row's id as read, as a string (may be null or "
                                                          "repeated: see reason)", TEXT: "the text as read"})
    reasons = m.get("quarantine_reasons", {})
    lines += ["", "## Quarantine reasons", "", "| reason | rows | meaning |", "|---|---|---|"]
    lines += [f"| `{r}` | {reasons.get(r, 0):,} | {doc} |" for r, doc in QUARANTINE_REASON_DOCS.items()]
    return "\n".join(lines) + "\n"


def _predictions(pinned: PublishedRun) -> str:
    root = pinned.root
    m = _manifest(root)
    tasks = m.get("tasks", {})
    docs = {"id": "the embedding table's id (one row per embedding row)"}
    for name, t in tasks.items():
        labels = t.get("labels", [])
        shown = ", ".join(f"`{x}`" for x in labels[:12]) + (f" and {len(labels) - 12} more" if len(labels) > 12 else "")
        if t["kind"] == "multilabel":
            docs[name] = f"labels whose probability reaches their threshold (of {shown})"
            docs[f"{name}_scores"] = "every label's probability, by name (`" + name + "_scores.<label>`)"
        else:
            docs[name] = f"the predicted label ({shown})"
            docs[f"{name}_score"] = "the probability of the predicted label"
        if t["kind"] == "binary":
            docs[f"{name}_positive_score"] = f"the probability of the positive label `{t.get('positive_label')}`"
    for col in m.get("passthrough", []):
        docs[col] = COLUMN_DOCS.get(col, "passed through from the embedding table") + " (from the embedding table)"
    _, files, out = check_predictions_run(root)
    lines = _header("Predictions table", pinned, m)
    lines += [f"Rows: {out:,}, one per "
              f"row of the embedding table `{m.get('embeddings')}`; heads from `{m.get('heads')}`; feature spec "
              f"`{str(m.get('feature_spec_fingerprint'))[:16]}…`.", "", "## Tasks", "",
              "| task | kind | labels |", "|---|---|---|"]
    lines += [f"| {n} | {t['kind']} | {len(t.get('labels', []))} |" for n, t in tasks.items()]
    lines += ["", f"## Columns of `predictions/` ({len(files)} Parquet files)", ""]
    lines += _columns(files, docs)
    return "\n".join(lines) + "\n"


def _neighbours(pinned: PublishedRun) -> str:
    root = pinned.root
    m = check_neighbours_run(root)
    lines = _header("Neighbours", pinned, m)
    lines += [f"Over `{m.get('embeddings')}` ({m.get('rows', 0):,} rows, {m.get('bits')}-bit codes).", ""]
    if "search" in m:
        s = m["search"]
        how = (f", rescored: the binary top-{s['rescore']['candidates']} re-ranked by int8 cosine"
               if "rescore" in s else "")
        lines += [f"## `search/`: the {s['k']} nearest rows of each of {s['queries']} queries (from "
                  f"{s['queries_from']}{how})", ""]
        lines += _columns(sorted((root / "search").glob("*.parquet")), NEIGHBOUR_DOCS)
    if "duplicates" in m:
        d = m["duplicates"]
        lines += ["", f"## `duplicates/`: {d['pairs']:,} pairs within {d['radius']} bits, each once", ""]
        lines += _columns(sorted((root / "duplicates").glob("*.parquet")), NEIGHBOUR_DOCS)
    return "\n".join(lines) + "\n"


def _manifest(root: Path) -> dict:
    return read_manifest(root)               # missing or not JSON: TableError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs.describe", description="Print a published table's data dictionary.")
    p.add_argument("folder", help="a published output: out/embed, out/predictions or out/neighbours")
    p.add_argument("--output", help="write the Markdown here instead of printing it")
    args = p.parse_args(argv)
    try:
        text = describe(args.folder)
    except (InputError, TableError) as exc:
        print(f"jobs.describe: {one_line(exc)}", file=sys.stderr)
        return exit_code(exc) or 3
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
