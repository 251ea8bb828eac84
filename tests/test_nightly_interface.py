"""What a scheduler drives: --dry-run, the run log, progress lines, exit codes (the embed job, real model, a slice)."""
from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest

from jobs import embed

from .conftest import SAMPLE

pytestmark = pytest.mark.spark


def test_dry_run_then_run_then_failure_are_logged(spark, tmp_path, capsys, caplog):
    src = tmp_path / "in.parquet"
    t = pq.read_table(SAMPLE).slice(0, 120)
    pq.write_table(t, src)
    out = tmp_path / "emb"
    args = ["--set", f"input.path={src}", "--set", f"output.path={out}"]
    assert embed.main(args + ["--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 120 and report["valid"] == 120 and report["quarantine"] == {}
    assert report["quarantine_limit_ok"] and not out.exists()          # nothing written
    with caplog.at_level(logging.INFO, logger="jobs.embed"):
        assert embed.main(args) == 0
    assert any("encoded 120 of 120 rows (100%)" in r.getMessage() for r in caplog.records)
    assert embed.main(args + ["--set", "input.text_column=body"]) == 3
    log = [json.loads(x) for x in (tmp_path / "emb.runs" / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in log] == ["published", "failed"]
    assert log[0]["run_id"] == out.resolve().name and log[0]["rows"]["written"] == 120 and log[0]["exit_code"] == 0
    assert len(log[0]["spec"]) == 64 and log[0]["job"] == "embed"
    assert log[1]["exit_code"] == 3 and "body" in log[1]["error"] and log[1]["run_id"] is None
