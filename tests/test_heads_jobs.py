"""End to end: embed -> train_heads -> apply_heads on local Spark with the real model and the shipped sample."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoder.quantize import codes_from_column
from encoder.spec import SpecMismatchError
from heads.io import load_heads
from heads.score import FusedScorer
from jobs import apply_heads, embed, train_heads
from jobs.common import load_config
from encoder.table import open_table

from .conftest import SAMPLE, crash_after

pytestmark = pytest.mark.spark


def test_heads_are_published_with_report_and_beat_majority(pipeline):
    hd = pipeline["heads"]
    for task in ("emotions", "neutral"):
        assert (hd / task / "weights.safetensors").is_file() and (hd / task / "head.json").is_file()
    assert (hd / "report.md").read_text().count("| emotions | multilabel |") == 1
    metrics = json.loads((hd / "metrics.json").read_text())
    emo = metrics["emotions"]
    assert emo["rows"] == 1000 and emo["train_rows"] == 4000
    assert emo["macro_f1"] > emo["majority_macro_f1"] and emo["micro_f1"] > emo["majority_micro_f1"]
    assert emo["macro_f1_at_0.5"] > emo["majority_macro_f1"]  # beats the baseline without threshold tuning too
    assert metrics["neutral"]["accuracy"] > metrics["neutral"]["majority_accuracy"]
    assert pipeline["train"]["rows"] == {"matched": 5000, "embedding_only": 0, "labels_only": 0, "used": 5000,
                                         "validation": 1000, "held_out_split": 0}


def test_predictions_cover_every_row_and_match_in_process_scoring(pipeline):
    emb = pq.read_table(pipeline["embed"] / "embeddings", columns=["id", "embedding"])
    pred = pq.read_table(pipeline["pred"] / "predictions")
    assert pipeline["apply"]["rows"] == {"in": 5000, "out": 5000}
    assert pred.column_names == ["id", "split", "emotions", "emotions_scores", "neutral", "neutral_score",
                                 "neutral_positive_score"]
    src = pq.read_table(SAMPLE, columns=["id", "split"]).to_pydict()
    assert dict(zip(pred.column("id").to_pylist(), pred.column("split").to_pylist())) == dict(zip(src["id"],
                                                                                                  src["split"]))
    assert sorted(pred.column("id").to_pylist()) == sorted(emb.column("id").to_pylist())
    spec = open_table(pipeline["embed"]).spec
    heads = load_heads(pipeline["heads"], spec)
    codes = codes_from_column(emb.column("embedding").to_pylist()[:200], spec.n_bytes)
    logits = dict(zip([h.task.name for h in heads], FusedScorer(heads, spec).logits(codes)))
    by_id = {r["id"]: r for r in pred.to_pylist()}
    for i, rid in enumerate(emb.column("id").to_pylist()[:200]):
        p = 1 / (1 + np.exp(-logits["neutral"][i, 0]))
        assert by_id[rid]["neutral"] == ("neutral" if p >= 0.5 else "emotional")
        np.testing.assert_allclose(by_id[rid]["neutral_positive_score"], p, rtol=1e-5)
        emo = next(h for h in heads if h.task.name == "emotions")
        assert list(by_id[rid]["emotions_scores"]) == emo.labels
        np.testing.assert_allclose(list(by_id[rid]["emotions_scores"].values()),
                                   1 / (1 + np.exp(-logits["emotions"][i])), rtol=1e-5)


def test_join_accounting_and_held_out_split(pipeline, spark, tmp_path):
    src = pq.read_table(SAMPLE).to_pydict()
    rows = list(range(1200)) + list(range(4000, 4300))              # 1,200 train + 300 validation rows
    n = len(rows)
    ids = [src["id"][i] for i in rows] + [f"nope{i}" for i in range(7)]   # 7 labelled ids without an embedding
    split = ["test" if k % 10 == 3 else src["split"][i] for k, i in enumerate(rows)] + ["train"] * 7
    labels = pa.table({"id": ids, "neutral": [src["neutral"][i] for i in rows] + [0] * 7, "split": split})
    lp = tmp_path / "labels.parquet"
    pq.write_table(labels, lp)
    overrides = [f"embeddings={pipeline['embed']}", f"labels.path={lp}",
                 "tasks=[{name: neutral, kind: binary, columns: [neutral]}]", "train.epochs=3"]
    m_arrow = train_heads.run(load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml",
                                          overrides + [f"output.path={tmp_path / 'a'}", "reader=arrow"]))
    held = sum(1 for s in split[:n] if s == "test")
    assert m_arrow["rows"]["matched"] == n and m_arrow["rows"]["labels_only"] == 7
    assert m_arrow["rows"]["embedding_only"] == 5000 - n and m_arrow["rows"]["held_out_split"] == held
    assert m_arrow["rows"]["used"] == n - held
    m_peta = train_heads.run(load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml",
                                         overrides + [f"output.path={tmp_path / 'p'}", "reader=petastorm"]))
    assert m_peta["reader"] == "petastorm" and m_peta["rows"] == m_arrow["rows"]
    a = (tmp_path / "a" / "neutral" / "weights.safetensors").read_bytes()
    b = (tmp_path / "p" / "neutral" / "weights.safetensors").read_bytes()
    assert a == b  # the streaming reader trains the very same head


def test_heads_of_another_spec_are_refused(pipeline, spark, tmp_path):
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 40), small)
    other = tmp_path / "other"
    embed.run(load_config(embed.EmbedConfig, "conf/embed.yaml", [
        f"input.path={small}", f"output.path={other}", "encoder.layers=last"]))
    cfg = load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
        f"embeddings={other}", f"heads={pipeline['heads']}", f"output.path={tmp_path / 'pred'}"])
    with pytest.raises(SpecMismatchError, match="not comparable"):
        apply_heads.run(cfg)
    assert not Path(cfg.output.path).exists()


def _train_cfg(pipeline, tmp_path, *more):
    return load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml", [
        f"embeddings={pipeline['embed']}", f"output.path={tmp_path / 'heads'}", "train.epochs=2", *more])


def _hashes(folder: Path, pattern: str) -> dict[str, str]:
    import hashlib

    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob(pattern))}


def test_train_heads_rerun_gives_identical_heads_and_a_failure_publishes_nothing(pipeline, spark, tmp_path,
                                                                                  monkeypatch):
    cfg = _train_cfg(pipeline, tmp_path)
    train_heads.run(cfg)
    out = Path(cfg.output.path)
    first_run, first = out.resolve(), _hashes(out, "*.safetensors")
    assert len(first) == 2
    train_heads.run(cfg)
    assert out.resolve() != first_run and _hashes(out, "*.safetensors") == first
    assert json.loads((out / "metrics.json").read_text()) == json.loads((first_run / "metrics.json").read_text())
    before = out.resolve()

    def crash(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(train_heads, "save_head", crash)
    with pytest.raises(OSError, match="injected"):
        train_heads.run(cfg)
    assert out.resolve() == before and _hashes(out, "*.safetensors") == first


def test_apply_heads_rerun_is_identical_and_a_failure_publishes_nothing(pipeline, spark, tmp_path, monkeypatch):
    cfg = load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
        f"embeddings={pipeline['embed']}", f"heads={pipeline['heads']}", f"output.path={tmp_path / 'pred'}"])
    apply_heads.run(cfg)
    out = Path(cfg.output.path)
    first_run = out.resolve()
    first = pq.read_table(out / "predictions")
    apply_heads.run(cfg)
    assert out.resolve() != first_run and pq.read_table(out / "predictions").equals(first)
    assert _hashes(out / "predictions", "*.parquet") == _hashes(first_run / "predictions", "*.parquet")
    before = out.resolve()
    monkeypatch.setattr(apply_heads, "write_table", crash_after(apply_heads.write_table))
    with pytest.raises(OSError, match="injected"):
        apply_heads.run(cfg)
    assert out.resolve() == before and pq.read_table(out / "predictions").equals(first)


def test_test_split_gives_the_figures_and_missing_validation_falls_back_to_a_hash(pipeline, spark, tmp_path):
    src = pq.read_table(SAMPLE).to_pydict()
    n = 2000
    split = ["test" if i % 4 == 0 else "train" for i in range(n)]      # train/test only: no validation rows
    lp = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"id": src["id"][:n], "neutral": src["neutral"][:n], "split": split}), lp)
    m = train_heads.run(_train_cfg(pipeline, tmp_path, f"labels.path={lp}",
                                   "tasks=[{name: neutral, kind: binary, columns: [neutral], labels: [NOT, OFF]}]"))
    assert m["evaluation"] == {"split": "test", "test_rows": 500, "validation": "hash of id"}
    metrics = json.loads((tmp_path / "heads" / "metrics.json").read_text())["neutral"]
    assert metrics["split"] == "test" and metrics["rows"] == 500
    report = (tmp_path / "heads" / "report.md").read_text()
    assert "**test** split (500 rows)" in report and "deterministic hash of the id" in report
    head = json.loads((tmp_path / "heads" / "neutral" / "head.json").read_text())
    assert head["labels"] == ["NOT", "OFF"]


def test_validation_figures_are_labelled_as_such(pipeline):
    report = (pipeline["heads"] / "report.md").read_text()
    assert "**validation** figures" in report and "optimistic" in report
    assert "labels with a positive in the validation rows" in report


def test_stray_label_value_fails_with_exit_code_3_and_one_line(pipeline, spark, tmp_path, capsys):
    src = pq.read_table(SAMPLE).to_pydict()
    neutral = list(src["neutral"][:600])
    neutral[17] = 7
    lp = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"id": src["id"][:600], "neutral": neutral, "split": src["split"][:600]}), lp)
    code = train_heads.main(["--config", "conf/train_heads.yaml", "--set", f"embeddings={pipeline['embed']}",
                             "--set", f"output.path={tmp_path / 'h'}", "--set", f"labels.path={lp}", "--set",
                             "tasks=[{name: neutral, kind: binary, columns: [neutral]}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and not (tmp_path / "h").exists()
    assert err[-1].startswith("train_heads: LabelError: task 'neutral': column 'neutral' holds 7 (row id ")
    assert "Traceback" not in "\n".join(err)


def test_glob_columns_train_a_multilabel_head(pipeline, spark, tmp_path):
    m = train_heads.run(_train_cfg(pipeline, tmp_path, "tasks=[{name: a_emotions, kind: multilabel, columns: [a*]}]"))
    head = json.loads((tmp_path / "heads" / "a_emotions" / "head.json").read_text())
    assert head["task"]["columns"] == ["admiration", "amusement", "anger", "annoyance", "approval"]
    assert m["tasks"] == ["a_emotions"]
