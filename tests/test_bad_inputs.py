"""Known bad inputs and outputs (issue 19, parts 4 and 5): each is read as documented or refused with one line and
a documented exit code; a failed run leaves the published table as it was.

Inputs: gzip-compressed CSV (read; gzip bytes under a name without .gz refused), a folder with a stray README
(skipped by extension and named in the log), Parquet files whose id types differ (refused; integer widths widened),
a UTF-8 byte-order mark (read past; UTF-16 refused), CSV headers that differ between files (refused). Texts with no
visible content are ``empty_text``; the id ``''`` is ``empty_id`` (quarantined), any other string id is kept as is.
The run log: whole records only (a real short write under RLIMIT_FSIZE), a line cut mid-record repaired, error texts
one bounded line. The output: read-only (really, where the tests do not run as root; as root, where permissions do
not stop writes, the kernel's EROFS is raised by the os calls under the output), full (a real ENOSPC from /dev/full at
the staging write) or under a file (a real ENOTDIR).

Refusals made before Spark starts run in unmarked tests (no JVM); the rest run the embed job with the tiny model."""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import logging
import os
import resource
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import embed, publish
from jobs.common import load_config
from jobs.errors import InputError, exit_code
from jobs.ingest import check_input, InputConfig
from jobs.publish import OutputError

CSV_ROWS = [("a1", "hello world"), ("a2", "the man is playing a guitar"), ("a3", "good movie")]


def csv_text(rows, header=("id", "text")) -> str:
    return ",".join(header) + "\n" + "".join(f"{i},{t}\n" for i, t in rows)


def run_cfg(tmp_path: Path, src: Path, fmt: str, model: Path, *more: str, out: Path | None = None):
    return load_config(embed.EmbedConfig, "conf/embed.yaml", [
        f"input.path={src}", f"input.format={fmt}", f"output.path={out or tmp_path / 'out' / 'emb'}",
        "input.passthrough=[]", f"encoder.model={model}", "encoder.layers=last", "output.mode=full", *more])


def main_args(src: Path, fmt: str, model: Path, out: Path, *more: str) -> list[str]:
    sets = [f"input.path={src}", f"input.format={fmt}", f"output.path={out}", "input.passthrough=[]",
            f"encoder.model={model}", "encoder.layers=last", "output.mode=full", *more]
    return [a for s in sets for a in ("--set", s)]


def one_error_line(capsys, cls: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if f"{cls}: " in ln]
    assert len(lines) == 1, err
    return lines[0]


def ids_of(out: Path, table: str = "embeddings") -> list:
    return sorted(pq.read_table(out / table).column("id").to_pylist())


def no_spark(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("Spark was started")
    monkeypatch.setattr(embed, "spark_session", refuse)


# -- inputs: refused before Spark (no JVM) ----------------------------------------------------------------------
def test_gzip_bytes_under_a_csv_name_are_refused_not_read_as_text(tmp_path, tiny_model_dir, capsys, monkeypatch):
    no_spark(monkeypatch)
    src = tmp_path / "feed.csv"
    src.write_bytes(gzip.compress(csv_text(CSV_ROWS).encode()))
    assert embed.main(main_args(src, "csv", tiny_model_dir, tmp_path / "emb")) == 3
    line = one_error_line(capsys, "InputError")
    assert "feed.csv holds gzip-compressed bytes" in line and "feed.csv.gz" in line


def test_parquet_files_whose_id_types_differ_are_refused_naming_both(tmp_path, tiny_model_dir, capsys, monkeypatch):
    no_spark(monkeypatch)
    d = tmp_path / "feed"
    d.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "text": ["hello", "world"]}), d / "a.parquet")
    pq.write_table(pa.table({"id": ["3", "4"], "text": ["good", "bad"]}), d / "b.parquet")
    assert embed.main(main_args(d, "parquet", tiny_model_dir, tmp_path / "emb")) == 3
    line = one_error_line(capsys, "InputError")
    assert "column 'id' is int64 in a.parquet but string in b.parquet" in line


def test_a_parquet_file_without_a_column_the_first_has_is_named(tmp_path):
    d = tmp_path / "feed"
    d.mkdir()
    pq.write_table(pa.table({"id": ["1"], "text": ["hello"]}), d / "a.parquet")
    pq.write_table(pa.table({"id": ["2"], "body": ["world"]}), d / "b.parquet")
    with pytest.raises(InputError, match=r"b\.parquet.* has no column\(s\) \['text'\]"):
        check_input(InputConfig(path=str(d)))


def test_utf16_and_differing_csv_headers_are_refused(tmp_path):
    u16 = tmp_path / "excel.csv"
    u16.write_bytes(csv_text(CSV_ROWS).encode("utf-16"))            # BOM FF FE + UTF-16LE
    with pytest.raises(InputError, match="UTF-16"):
        check_input(InputConfig(path=str(u16), format="csv"))
    d = tmp_path / "two"
    d.mkdir()
    (d / "a.csv").write_text(csv_text(CSV_ROWS))
    (d / "b.csv").write_text(csv_text([("x", "b1")], header=("text", "id")))   # swapped: read by position
    with pytest.raises(InputError, match=r"b\.csv has the header \['text', 'id'\] but a\.csv has \['id', 'text'\]"):
        check_input(InputConfig(path=str(d), format="csv"))


def test_a_folder_with_no_file_of_the_format_names_what_it_found(tmp_path):
    d = tmp_path / "feed"
    d.mkdir()
    (d / "README.txt").write_text("the feed arrives at 02:00\n")
    with pytest.raises(InputError, match=r"holds no csv files \(names ending in .*\.csv.*\); found only README\.txt"):
        check_input(InputConfig(path=str(d), format="csv"))


# -- inputs: read -----------------------------------------------------------------------------------------------
def test_a_gzipped_csv_is_read_as_csv(spark, tmp_path, tiny_model_dir):
    src = tmp_path / "feed.csv.gz"
    src.write_bytes(gzip.compress(b'id,text\na1,"hello\nworld"\na2,the man is playing a guitar\na3,good movie\n'))
    m = embed.run(run_cfg(tmp_path, src, "csv", tiny_model_dir, "input.keep_text=true"))
    assert m["rows"] == {"in": 3, "written": 3, "quarantined": 0, "truncated": 0}
    t = pq.read_table(tmp_path / "out" / "emb" / "embeddings").to_pydict()
    assert dict(zip(t["id"], t["text"]))["a1"] == "hello\nworld"      # a quoted newline inside the gzip stream


def test_a_folder_reads_only_the_formats_files_and_logs_the_skipped(spark, tmp_path, tiny_model_dir, caplog):
    d = tmp_path / "feed"
    (d / "docs").mkdir(parents=True)
    (d / "README.txt").write_text("This folder holds the nightly export.\nid,text\nr1,not a row\n")
    (d / "docs" / "schema.md").write_text("# columns\n")
    (d / "_SUCCESS").write_text("")
    (d / "a.csv").write_text(csv_text(CSV_ROWS[:2]))
    (d / "b.csv.gz").write_bytes(gzip.compress(csv_text(CSV_ROWS[2:]).encode()))
    with caplog.at_level(logging.WARNING, logger="jobs.ingest"):
        m = embed.run(run_cfg(tmp_path, d, "csv", tiny_model_dir))
    assert m["rows"]["in"] == 3 and ids_of(tmp_path / "out" / "emb") == ["a1", "a2", "a3"]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "README.txt" in skipped[0] and "docs/schema.md" in skipped[0], skipped
    assert "_SUCCESS" not in skipped[0]


def test_a_csv_with_a_byte_order_mark_is_read(spark, tmp_path, tiny_model_dir):
    src = tmp_path / "excel.csv"
    src.write_bytes(b"\xef\xbb\xbf" + csv_text(CSV_ROWS).encode())       # what Excel's "CSV UTF-8" writes
    m = embed.run(run_cfg(tmp_path, src, "csv", tiny_model_dir))
    assert m["rows"]["written"] == 3 and ids_of(tmp_path / "out" / "emb") == ["a1", "a2", "a3"]


def test_integer_ids_of_two_widths_are_read_as_bigint(spark, tmp_path, tiny_model_dir):
    d = tmp_path / "feed"
    d.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int32()), "text": ["hello", "world"]}), d / "a.parquet")
    pq.write_table(pa.table({"id": pa.array([3, 2**40], pa.int64()), "text": ["good", "bad"]}), d / "b.parquet")
    m = embed.run(run_cfg(tmp_path, d, "parquet", tiny_model_dir))
    assert m["rows"]["written"] == 4 and ids_of(tmp_path / "out" / "emb") == [1, 2, 3, 2**40]
    part = sorted((tmp_path / "out" / "emb" / "embeddings").glob("*.parquet"))[0]
    assert pq.read_schema(part).field("id").type == pa.int64()


# -- part 5: texts with no visible content, the id '' -----------------------------------------------------------
INVISIBLE = {"zwsp": "\u200b", "nul": "\x00", "marks": "\u0301\u0308", "shy": "\u00ad", "ctrl": "\x01\x07\x1b",
             "mixed": " \u200b\u00ad\ufeff\u2060\u200d \x00\t", "ideo_space": "\u3000", "vs16": "\ufe0f",
             "bidi": "\u200e\u200f\u202a"}
VISIBLE = {"emoji": "😀", "cjk": "日本語", "arabic": "مَرْحَبًا", "accent": "a\u0301", "skin": "👍🏽",
           "family": "👨\u200d👩\u200d👧", "zwsp_word": "\u200bhello", "hindi": "नमस्ते", "hebrew": "שָׁלוֹם",
           "plain": "hello world"}


def test_texts_with_no_visible_content_are_empty_text_and_the_id_empty_string_is_empty_id(spark, tmp_path,
                                                                                            tiny_model_dir):
    rows = {**INVISIBLE, **VISIBLE, "": "a text whose id is the empty string", " 7": "an id with a space is an id"}
    src = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"id": list(rows), "text": list(rows.values())}), src)
    m = embed.run(run_cfg(tmp_path, src, "parquet", tiny_model_dir, "output.max_quarantine_fraction=1.0"))
    out = tmp_path / "out" / "emb"
    q = pq.read_table(out / "quarantine").to_pydict()
    assert dict(zip(q["id"], q["reason"])) == {**{k: "empty_text" for k in INVISIBLE}, "": "empty_id"}
    assert ids_of(out) == sorted([*VISIBLE, " 7"])
    assert m["quarantine_reasons"] == {"empty_id": 1, "empty_text": len(INVISIBLE)}


# -- the run log ------------------------------------------------------------------------------------------------
def log_lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (publish.runs_dir(out) / publish.RUN_LOG).read_bytes().decode().split("\n") if x]


def test_a_run_log_cut_mid_line_does_not_swallow_the_next_record(tmp_path):
    out = tmp_path / "emb"
    publish.log_run(out, {"job": "embed", "status": "published", "exit_code": 0})
    path = publish.runs_dir(out) / publish.RUN_LOG
    with path.open("ab") as f:
        f.write(b'{"job": "embed", "status": "fail')                       # a write cut by a full disk
    publish.log_run(out, {"job": "embed", "status": "failed", "exit_code": 3})
    assert [r["status"] for r in log_lines(out)] == ["published", "failed"]
    with path.open("ab") as f:                                              # a whole record that lost its newline
        f.write(json.dumps({"job": "other", "status": "published"}).encode())
    publish.log_run(out, {"job": "embed", "status": "published", "exit_code": 0})
    assert [r["job"] for r in log_lines(out)] == ["embed", "embed", "other", "embed"]


def test_a_full_disk_during_the_run_log_append_leaves_no_half_record(tmp_path):
    """A real short write: RLIMIT_FSIZE lets the kernel write only the bytes up to the limit (as a disk that fills
    mid-write does), then refuses with EFBIG; SIGXFSZ is ignored so the process gets the error, not the signal."""
    out = tmp_path / "emb"
    publish.log_run(out, {"job": "embed", "status": "published", "exit_code": 0})
    path = publish.runs_dir(out) / publish.RUN_LOG
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 20, hard))
        with pytest.raises(OSError):
            publish.log_run(out, {"job": "embed", "status": "failed", "exit_code": 9, "error": "x" * 200})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert path.read_bytes() == before                                      # not 20 bytes of a record
    publish.log_run(out, {"job": "embed", "status": "published", "exit_code": 0})
    assert [r["status"] for r in log_lines(out)] == ["published", "published"]


def test_run_log_error_texts_are_one_bounded_line(tmp_path):
    out = tmp_path / "emb"
    trace = "Traceback (most recent call last):\n" + "  File \"x.py\", line 1, in <module>\n" * 300 + "Boom: no"
    publish.log_run(out, {"job": "embed", "status": "failed", "exit_code": 1, "error": trace})
    (rec,) = log_lines(out)
    assert "\n" not in rec["error"] and len(rec["error"]) <= publish.ERROR_CHARS
    assert rec["error"].startswith("Traceback (most recent call last): File")


# -- the output: read-only, full, under a file ------------------------------------------------------------------
def file_hashes(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*")) if f.is_file()}


def chmod_tree(root: Path, folders: int, files: int) -> None:
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(folders if p.is_dir() else files)


def read_only(monkeypatch, root: Path) -> None:
    """Make ``root`` read-only. Not as root: really (chmod). As root, where permissions do not stop writes: the os
    calls that write under ``root`` fail as a read-only mount fails them (EROFS, with the path)."""
    if os.geteuid() != 0:
        chmod_tree(root, 0o555, 0o444)
        return

    def under(p) -> bool:
        return Path(os.fsdecode(p)).absolute().is_relative_to(root)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_open, real_mkdir, real_symlink = os.open, os.mkdir, os.symlink
    write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    monkeypatch.setattr(os, "open", lambda p, flags, *a, **k: refuse(p) if under(p) and flags & write
                        else real_open(p, flags, *a, **k))
    monkeypatch.setattr(os, "mkdir", lambda p, *a, **k: refuse(p) if under(p) else real_mkdir(p, *a, **k))
    monkeypatch.setattr(os, "symlink", lambda s, d, *a, **k: refuse(d) if under(d) else real_symlink(s, d, *a, **k))


def writable_again(root: Path) -> None:
    if os.geteuid() != 0:
        chmod_tree(root, 0o755, 0o644)


def test_a_read_or_full_output_filesystem_is_exit_9_naming_the_path_and_the_old_table_stays(
        spark, tmp_path, tiny_model_dir, capsys, monkeypatch):
    src = tmp_path / "in.csv"
    src.write_text(csv_text(CSV_ROWS))
    root = tmp_path / "outfs"
    out = root / "emb"
    args = main_args(src, "csv", tiny_model_dir, out)
    assert embed.main(args) == 0
    capsys.readouterr()
    before = (out.resolve(), file_hashes(out.resolve()))

    # read-only
    with monkeypatch.context() as m:
        read_only(m, root)
        try:
            assert embed.main(args) == 9
        finally:
            writable_again(root)
    line = one_error_line(capsys, "OutputError")
    assert line.startswith("embed: OutputError: output.path ") and str(out) in line
    assert ("Read-only file system" in line or "Permission denied" in line) and "is intact" in line, line
    assert (out.resolve(), file_hashes(out.resolve())) == before

    # full: a real ENOSPC from /dev/full where the staging folder's first file is written
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    real_begin = publish.begin_run

    def begin_on_a_full_disk(output):
        run_id, staging = real_begin(output)
        (staging / "feature_spec.json").symlink_to("/dev/full")
        return run_id, staging

    with monkeypatch.context() as m:
        m.setattr(publish, "begin_run", begin_on_a_full_disk)
        assert embed.main(args) == 9
    line = one_error_line(capsys, "OutputError")
    assert "No space left on device [ENOSPC]" in line and str(out) in line and before[0].name in line, line
    assert (out.resolve(), file_hashes(out.resolve())) == before
    log = log_lines(out)      # a read-only filesystem took no record; the full disk's failure is recorded
    assert [r["exit_code"] for r in log] == [0, 9] and "\n" not in log[1]["error"] and "ENOSPC" in log[1]["error"]

    # and the next run on a healthy filesystem publishes (the dead run folders are removed)
    assert embed.main(args) == 0
    assert out.resolve() != before[0] and sorted(p.name for p in publish.runs_dir(out).iterdir() if p.is_dir()) == \
        sorted([before[0].name, out.resolve().name])


def test_an_output_path_under_a_file_is_an_output_error(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OutputError, match=r"output\.path .*a_file/emb cannot be written .*Not a directory") as info:
        publish.begin_run(tmp_path / "a_file" / "emb")
    assert exit_code(info.value) == 9 and "no earlier output" in str(info.value)


def test_only_write_faults_under_the_output_are_output_errors(tmp_path):
    out = tmp_path / "emb"
    reading_input = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "input.csv"))
    assert publish.as_output_error(out, reading_input) is None            # an input fault stays what it is
    assert publish.as_output_error(out, OSError("disk full (injected)")) is None        # no errno: not classified
    assert publish.as_output_error(out, ValueError("a bug")) is None
    staging = publish.runs_dir(out) / "20260101T000000Z-abcd"
    java = RuntimeError(f"An error occurred while calling o81.parquet.\n: org.apache.spark.SparkException: Job "
                        f"aborted.\n\tat x\nCaused by: java.io.IOException: Mkdirs failed to create file:{staging}/"
                        "embeddings/_temporary/0\n\tat y")
    err = publish.as_output_error(out, java)
    assert isinstance(err, OutputError) and "Mkdirs failed to create" in str(err) and "\n" not in str(err)
    full = RuntimeError("Caused by: java.io.IOException: No space left on device\n\tat java.io.FileOutputStream")
    assert "No space left on device" in str(publish.as_output_error(out, full))
