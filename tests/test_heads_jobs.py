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
from jobs.train_heads import load_table_spec

from .conftest import SAMPLE

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline(spark, tmp_path_factory):
    """The default pipeline (conf/*.yaml) with outputs redirected to a temporary folder."""
    root = tmp_path_factory.mktemp("pipeline")
    emb, hd, pred = root / "embed", root / "heads", root / "predictions"
    embed.run(load_config(embed.EmbedConfig, "conf/embed.yaml", [f"output.path={emb}"]))
    train_cfg = load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml",
                            [f"embeddings={emb}", f"output.path={hd}"])
    train_manifest = train_heads.run(train_cfg)
    apply_manifest = apply_heads.run(load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
        f"embeddings={emb}", f"heads={hd}", f"output.path={pred}"]))
    return {"embed": emb, "heads": hd, "pred": pred, "train": train_manifest, "apply": apply_manifest,
            "train_cfg": train_cfg}


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
    assert pred.column_names == ["id", "emotions", "emotions_scores", "neutral", "neutral_score"]
    assert sorted(pred.column("id").to_pylist()) == sorted(emb.column("id").to_pylist())
    spec = load_table_spec(pipeline["embed"])
    heads = load_heads(pipeline["heads"], spec)
    codes = codes_from_column(emb.column("embedding").to_pylist()[:200], spec.n_bytes)
    logits = dict(zip([h.task.name for h in heads], FusedScorer(heads, spec).logits(codes)))
    by_id = {r["id"]: r for r in pred.to_pylist()}
    for i, rid in enumerate(emb.column("id").to_pylist()[:200]):
        p = 1 / (1 + np.exp(-logits["neutral"][i, 0]))
        assert by_id[rid]["neutral"] == ("neutral" if p >= 0.5 else "emotional")
        np.testing.assert_allclose(by_id[rid]["emotions_scores"], 1 / (1 + np.exp(-logits["emotions"][i])),
                                   rtol=1e-5)


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
