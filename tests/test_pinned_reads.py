"""A read is pinned to one run (issue 19, part 1), and a published table's manifest is checked (part 4).

Every reader of a published output resolves the published link to one run once, reads only that run's files and
records the run in its manifest. Each test swaps the published run between the open and the read (a wrapper around
the opener re-points the symlink to another complete run of the same output, of another spec, other rows and other
columns) and asserts the reader read the first run whole. A manifest that is missing, not JSON, or whose counts
disagree with the Parquet footers is a ``TableError``: one line on stderr, exit 6.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import encoder.table as table_mod
from encoder.table import TableError, open_table
from jobs import apply_heads, describe, embed, neighbours, publish, sql, tables, train_heads
from jobs.common import load_config

from .conftest import SAMPLE

pytestmark = pytest.mark.spark
TASKS = "[{name: neutral, kind: binary, head: linear, columns: [neutral], labels: [emotional, neutral]}]"


def embed_cfg(tiny: Path, out: Path, src: Path, *more: str):
    return load_config(embed.EmbedConfig, "conf/embed.yaml", [
        f"input.path={src}", f"output.path={out}", f"encoder.model={tiny}", "encoder.layers=last", "output.mode=full",
        "output.keep_runs=5", "encode_partitions=2", *more])


def point(link: Path, run: str) -> None:
    """Publish ``run`` (a complete run folder of ``link``'s output) the way ``jobs.publish`` does: one rename."""
    tmp = link.parent / f".{link.name}.swap"
    os.symlink(f"{link.name}.runs/{run}", tmp)
    os.replace(tmp, link)


def swapping(fn, link: Path, run: str):
    """``fn`` that publishes ``run`` into ``link`` right after it returns: between the open and the read."""
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        point(link, run)
        return out
    return wrapped


@pytest.fixture(scope="module")
def runs(spark, tiny_model_dir, tmp_path_factory):
    """One embed output with two complete runs: r1 (120 rows, layers=last, no passthrough) and r2 (40 other rows,
    layers=all: another spec of the same width, with a `split` column); heads trained on r1; the link on r1."""
    root = tmp_path_factory.mktemp("pinned")
    t = pq.read_table(SAMPLE)
    src1, src2, labels = root / "day1.parquet", root / "other.parquet", root / "labels.parquet"
    pq.write_table(t.slice(0, 120).select(["id", "text", "split"]), src1)
    pq.write_table(t.slice(200, 40).select(["id", "text", "split"]), src2)
    pq.write_table(t.slice(0, 240), labels)
    link = root / "embed"
    m1 = embed.run(embed_cfg(tiny_model_dir, link, src1))
    heads = root / "heads"
    train_heads.run(load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml", [
        f"embeddings={link}", f"labels.path={labels}", f"output.path={heads}", f"tasks={TASKS}", "train.epochs=2"]))
    m2 = embed.run(embed_cfg(tiny_model_dir, link, src2, "encoder.layers=all", "input.passthrough=[split]",
                             "output.min_rows_share=0"))
    assert m1["feature_spec"]["fingerprint"] != m2["feature_spec"]["fingerprint"]
    point(link, m1["run_id"])
    return {"root": root, "r1": m1["run_id"], "r2": m2["run_id"], "spec1": m1["feature_spec"]["fingerprint"],
            "ids1": set(t.slice(0, 120).column("id").to_pylist()), "src1": src1, "labels": labels, "heads": heads,
            "tiny": tiny_model_dir}


def clone(runs, tmp_path: Path) -> Path:
    """This test's own copy of the embed output (link + run folders), the link on r1."""
    src = runs["root"]
    shutil.copytree(src / "embed.runs", tmp_path / "embed.runs", symlinks=True)
    link = tmp_path / "embed"
    point(link, runs["r1"])
    return link


def test_apply_heads_reads_the_run_it_opened_whole(runs, tmp_path, monkeypatch):
    link = clone(runs, tmp_path)
    monkeypatch.setattr(apply_heads, "open_table", swapping(apply_heads.open_table, link, runs["r2"]))
    m = apply_heads.run(load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
        f"embeddings={link}", f"heads={runs['heads']}", f"output.path={tmp_path / 'pred'}", "mode=full"]))
    assert link.resolve().name == runs["r2"]                              # the swap happened mid-run
    assert m["rows"] == {"in": 120, "out": 120} and m["passthrough"] == []
    assert set(pq.read_table(tmp_path / "pred" / "predictions").column("id").to_pylist()) == runs["ids1"]
    assert m["feature_spec_fingerprint"] == runs["spec1"]
    r1 = (tmp_path / "embed.runs" / runs["r1"]).resolve()
    assert m["embeddings"] == str(r1)
    assert m["input_runs"]["embeddings"] == {"path": str(link), "run": runs["r1"], "root": str(r1)}
    assert m["input_runs"]["heads"]["run"] == runs["heads"].resolve().name


def test_train_heads_reads_the_run_it_opened_whole(runs, tmp_path, monkeypatch):
    link = clone(runs, tmp_path)
    monkeypatch.setattr(tables, "open_table", swapping(tables.open_table, link, runs["r2"]))
    m = train_heads.run(load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml", [
        f"embeddings={link}", f"labels.path={runs['labels']}", f"output.path={tmp_path / 'h'}", f"tasks={TASKS}",
        "train.epochs=1"]))
    assert link.resolve().name == runs["r2"]
    assert m["rows"]["matched"] == 120 and m["rows"]["embedding_only"] == 0 and m["rows"]["labels_only"] == 120
    assert m["feature_spec_fingerprint"] == runs["spec1"] and m["input_runs"]["embeddings"]["run"] == runs["r1"]


def test_neighbours_reads_the_run_it_opened_whole(runs, tmp_path, monkeypatch):
    link = clone(runs, tmp_path)
    monkeypatch.setattr(neighbours, "open_table", swapping(neighbours.open_table, link, runs["r2"]))
    m = neighbours.run(load_config(neighbours.NeighboursConfig, "conf/neighbours.yaml", [
        f"embeddings={link}", "search=null", "duplicates.radius=1", f"output.path={tmp_path / 'nb'}"]))
    assert link.resolve().name == runs["r2"]
    assert m["rows"] == 120 and m["input_runs"]["embeddings"]["run"] == runs["r1"]
    pairs = pq.read_table(tmp_path / "nb" / "duplicates").to_pydict()
    assert set(pairs["id_a"]) | set(pairs["id_b"]) <= runs["ids1"]


def test_code_index_reads_the_run_it_opened_whole(runs, tmp_path, monkeypatch):
    from search.index import CodeIndex

    link = clone(runs, tmp_path)
    monkeypatch.setattr(table_mod, "open_table", swapping(table_mod.open_table, link, runs["r2"]))
    index = CodeIndex.from_table(link)
    assert link.resolve().name == runs["r2"]
    assert len(index.ids) == 120 and set(index.ids.to_pylist()) == runs["ids1"] and index.run == runs["r1"]


def test_describe_describes_the_run_it_opened_whole(runs, tmp_path, monkeypatch):
    link = clone(runs, tmp_path)
    monkeypatch.setattr(describe, "open_table", swapping(describe.open_table, link, runs["r2"]))
    text = describe.describe(link)
    assert link.resolve().name == runs["r2"]
    assert "| written | 120 |" in text and f"run `{runs['r1']}`" in text
    assert "| `split` |" not in text                                     # r2's column: its files were not read


def test_incremental_embed_builds_on_the_run_its_guard_read(runs, tmp_path, monkeypatch):
    link = clone(runs, tmp_path)
    src = tmp_path / "day2.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 130).select(["id", "text", "split"]), src)
    monkeypatch.setattr(embed, "check_row_count", swapping(embed.check_row_count, link, runs["r2"]))
    m = embed.run(embed_cfg(runs["tiny"], link, src, "output.mode=incremental"))
    assert m["incremental"]["parent_run"] == runs["r1"]
    assert (m["incremental"]["new"], m["incremental"]["unchanged"]) == (10, 120)
    assert m["input_runs"]["base"]["run"] == runs["r1"] and m["rows"]["written"] == 130


def fake_run(link: Path, name: str, folder: str, rows: int, manifest: dict | None = None) -> Path:
    """A complete run of a predictions or neighbours output: ``folder``/part-00000.parquet with ``rows`` ids."""
    run = link.parent / f"{link.name}.runs" / name
    (run / folder).mkdir(parents=True)
    pq.write_table(pa.table({"id": [f"{name}-{i}" for i in range(rows)]}), run / folder / "part-00000.parquet")
    counts = {"rows": {"in": rows, "out": rows}} if folder == "predictions" else \
        {folder: {"rows" if folder == "search" else "pairs": rows}}       # what the jobs write: counts = footers
    (run / "manifest.json").write_text(json.dumps(manifest if manifest is not None else {"run_id": name} | counts))
    return run


def test_sql_views_are_pinned_to_the_runs_resolved_when_they_were_made(runs, tmp_path, monkeypatch):
    link = clone(runs, tmp_path)
    pred, nb = tmp_path / "predictions", tmp_path / "neighbours"
    for name, rows in (("20260101T000000Z-a", 3), ("20260102T000000Z-b", 5), ("20260103T000000Z-c", 7)):
        fake_run(pred, name, "predictions", rows)
    for name, rows in (("20260101T000000Z-a", 4), ("20260102T000000Z-b", 6)):
        fake_run(nb, name, "search", rows)
    point(pred, "20260102T000000Z-b")
    point(nb, "20260101T000000Z-a")
    monkeypatch.setattr(sql, "open_table", swapping(sql.open_table, link, runs["r2"]))
    views = sql.views(link, pred, nb)
    point(pred, "20260103T000000Z-c")                          # both links move before the query runs
    point(nb, "20260102T000000Z-b")
    con = sql.duckdb_connect(views)
    count = {v: con.sql(f"SELECT count(*) FROM {v}").fetchone()[0]
             for v in ("embeddings", "quarantine", "predictions", "predictions_prev", "neighbours")}
    assert count == {"embeddings": 120, "quarantine": 0, "predictions": 5, "predictions_prev": 3, "neighbours": 4}
    assert "split" not in con.sql("SELECT * FROM embeddings").columns


def test_the_previous_run_is_the_one_before_the_pinned_run(tmp_path):
    from encoder.table import published_run
    from jobs.tables import run_before

    pred = tmp_path / "predictions"
    for name in ("20260101T000000Z-a", "20260102T000000Z-b", "20260103T000000Z-c"):
        fake_run(pred, name, "predictions", 1)
    point(pred, "20260102T000000Z-b")
    pinned = published_run(pred)
    point(pred, "20260103T000000Z-c")                          # published after the reader pinned b
    assert run_before(pinned).name == "20260101T000000Z-a"     # not c's predecessor b, the pinned run itself
    assert publish.previous_run(pred).name == "20260102T000000Z-b"
    assert run_before(published_run(pred.resolve())) is None   # a run folder named directly has no output beside it


# -- part 4: a published table's manifest ---------------------------------------------------------------------------
def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_a_missing_manifest_is_exit_6_not_an_empty_table(runs, tmp_path, capsys):
    link = clone(runs, tmp_path)
    (link.resolve() / "manifest.json").unlink()
    with pytest.raises(TableError, match="has no manifest.json"):
        open_table(link)
    assert describe.main([str(link)]) == 6 and "has no manifest.json" in one_line(capsys)
    # the incremental row-share guard cannot be skipped: the nightly run refuses, the link stays
    code = embed.main(["--set", f"input.path={runs['src1']}", "--set", f"output.path={link}", "--set",
                       f"encoder.model={runs['tiny']}", "--set", "encoder.layers=last"])
    line = one_line(capsys)
    assert code == 6 and line.startswith("embed: TableError:") and "row-share guard" in line
    assert link.resolve().name == runs["r1"]


def test_a_manifest_that_is_not_json_is_exit_6(runs, tmp_path, capsys):
    link = clone(runs, tmp_path)
    (link.resolve() / "manifest.json").write_text('{"run_id": "x", "rows": {"wri')
    with pytest.raises(TableError, match="is not JSON"):
        open_table(link)
    assert describe.main([str(link)]) == 6 and "is not JSON" in one_line(capsys)
    out = tmp_path / "p"
    code = apply_heads.main(["--set", f"embeddings={link}", "--set", f"heads={runs['heads']}", "--set",
                             f"output.path={out}"])
    assert code == 6 and one_line(capsys).startswith("apply_heads: TableError:") and not out.exists()


def test_counts_that_disagree_with_the_footers_are_exit_6(runs, tmp_path, capsys):
    link = clone(runs, tmp_path)
    path = link.resolve() / "manifest.json"
    m = json.loads(path.read_text())
    m["rows"]["written"] += 1
    path.write_text(json.dumps(m))
    with pytest.raises(TableError, match="rows.written = 121, but the Parquet footers .* hold 120 rows"):
        open_table(link)
    out = tmp_path / "p"
    code = apply_heads.main(["--set", f"embeddings={link}", "--set", f"heads={runs['heads']}", "--set",
                             f"output.path={out}"])
    assert code == 6 and "rows.written = 121" in one_line(capsys) and not out.exists()
    # a predictions output: counts checked too, and a missing manifest is the same error
    pred = tmp_path / "predictions"
    fake_run(pred, "20260101T000000Z-a", "predictions", 3, {"run_id": "a", "rows": {"in": 4, "out": 4}})
    point(pred, "20260101T000000Z-a")
    assert describe.main([str(pred)]) == 6 and "rows.out = 4" in one_line(capsys)
    with pytest.raises(TableError, match="rows.out = 4"):          # the SQL views check the same counts
        sql.views(tmp_path / "none", pred, tmp_path / "none")
    (pred.resolve() / "manifest.json").unlink()
    assert describe.main([str(pred)]) == 6 and "has no manifest.json" in one_line(capsys)
    assert sql.main(["SELECT 1", "--embeddings", str(tmp_path / "none"), "--predictions", str(pred),
                     "--neighbours", str(tmp_path / "none")]) == 6 and "has no manifest.json" in one_line(capsys)


def test_a_run_a_job_is_reading_is_not_pruned_until_the_job_ends(tmp_path):
    """keep_runs prunes old runs at each publication; a run a live job reads (held through its reader lock) is kept,
    and the first publication after the job ended prunes it."""
    import time

    out = tmp_path / "out"

    def new_run() -> Path:
        time.sleep(1.05)                          # run ids order by the second they began
        _, staging = publish.begin_run(out)
        (staging / "manifest.json").write_text("{}")
        publish.publish(out, staging, keep_runs=1)
        return out.resolve()

    first = new_run()
    fd = os.open(first / publish.READERS, os.O_RDONLY)    # another process reading the first run holds its lock
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        second = new_run()
        third = new_run()
        assert first.is_dir() and not second.exists() and third.is_dir()   # the unheld older run went
    finally:
        os.close(fd)
    new_run()
    assert not first.exists()                     # released: the next publication prunes it

    held = new_run()
    publish.hold_run(held)
    fd = os.open(held / publish.READERS, os.O_RDONLY)     # as a pruning process would: the lock is taken
    try:
        publish.release_runs()
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(TableError, match="being pruned"):
            publish.hold_run(held)
    finally:
        os.close(fd)
