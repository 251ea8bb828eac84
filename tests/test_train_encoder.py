"""The train_encoder job: several labelled tables in, a model folder out (safetensors, tokenizer, lineage.json) that
the one loader reads and whose fingerprint is its own; the TorchDistributor path with 2 CPU processes; and on the
real model: train -> embed with the new model -> heads of the old spec refused."""
from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoder.model import load_encoder, model_fingerprint
from encoder.spec import SpecMismatchError
from encoder.typed_config import apply_overrides, build, read_yaml
from jobs import apply_heads, embed, train_encoder
from jobs.common import load_config

from .conftest import SAMPLE
from .test_tuning import BAD, GOOD, TOPIC_A, TOPIC_B


def tables(tmp_path: Path) -> tuple[Path, Path]:
    """A sentiment table with a split column (plus one blank text and one unlabelled row) and a topic folder split
    by file names."""
    texts = GOOD + BAD + ["   ", "hello world"]
    n = len(GOOD) + len(BAD)
    sent = pa.table({"id": [f"s{i}" for i in range(len(texts))], "text": texts,
                     "label": [1] * len(GOOD) + [0] * len(BAD) + [1, -1],
                     "split": ["train" if i % 4 else "validation" for i in range(n)] + ["train", "train"]})
    tmp_path.mkdir(parents=True, exist_ok=True)
    p1 = tmp_path / "sentiment.parquet"
    pq.write_table(sent, p1)
    topic = tmp_path / "topic"
    topic.mkdir()
    texts = TOPIC_A + TOPIC_B
    y = [0] * len(TOPIC_A) + [1] * len(TOPIC_B)
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(8)], "text": texts, "label": y}), topic / "train.parquet")
    pq.write_table(pa.table({"id": ["v0", "v1"], "text": [TOPIC_A[0], TOPIC_B[0]], "label": [0, 1]}),
                   topic / "validation.parquet")
    pq.write_table(pa.table({"id": ["x0"], "text": [TOPIC_A[1]], "label": [0]}), topic / "test.parquet")
    return p1, topic


def config(tmp_path: Path, model: str, **training) -> train_encoder.TrainEncoderConfig:
    p1, topic = tables(tmp_path)
    data = {"tasks": [{"name": "sentiment", "kind": "binary", "columns": ["label"], "table": {"path": str(p1)}},
                      {"name": "topic", "kind": "multiclass", "columns": ["label"], "labels": ["market", "music"],
                       "table": {"path": str(topic), "split": "file"}}],
            "encoder": {"model": model, "layers": "all", "device": "cpu"},
            "training": {"max_steps": 6, "eval_every": 3, "texts_per_step": 8, "token_budget": 64, "max_length": 16,
                         "lr": 1e-3, "keep_general": 1.0, "val_rows": 50} | training,
            "output": {"path": str(tmp_path / "encoder")}}
    return build(train_encoder.TrainEncoderConfig, data, "test")


def test_publishes_a_model_folder_with_lineage_the_loader_reads(spark, tiny_model_dir, tmp_path):
    cfg = config(tmp_path, str(tiny_model_dir))
    manifest = train_encoder.run(cfg)
    out = Path(cfg.output.path)
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "lineage.json"} <= \
        {f.name for f in out.iterdir()}
    assert not list(out.glob("*.bin"))
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["base_model"] == model_fingerprint(tiny_model_dir)
    sent, topic = lineage["tasks"]
    # 14 rows in: 1 blank text quarantined by reason, 1 without a label, 12 used (9 train, 3 validation)
    assert sent["rows"]["in"] == 14 and sent["rows"]["faults"] == {"empty_text": 1}
    assert sent["rows"]["unlabelled"] == 1 and sent["rows"]["train"] + sent["rows"]["validation"] == 12
    assert topic["rows"]["train"] == 8 and topic["rows"]["validation"] == 2 and topic["rows"]["test"] == 1
    assert [f["file"] for f in topic["data"]["files"]] == ["test.parquet", "train.parquet", "validation.parquet"]
    assert lineage["training"]["max_steps"] == 6 and lineage["training_run"]["history"]
    loaded = load_encoder(str(out))                       # the one loader: safetensors, no remote code
    assert loaded.fingerprint == manifest["model"] and loaded.fingerprint["name"] == lineage["name"]
    assert loaded.fingerprint["sha256"] != model_fingerprint(tiny_model_dir)["sha256"]
    before = model_fingerprint(out)["sha256"]            # the fingerprint covers lineage.json
    (out / "lineage.json").write_text((out / "lineage.json").read_text().replace('"seed": 0', '"seed": 1'))
    assert model_fingerprint(out)["sha256"] != before


def test_same_seed_gives_the_same_weights(spark, tiny_model_dir, tmp_path):
    a = train_encoder.run(config(tmp_path / "a", str(tiny_model_dir)))
    b = train_encoder.run(config(tmp_path / "b", str(tiny_model_dir)))
    wa = (tmp_path / "a" / "encoder" / "model.safetensors").read_bytes()
    assert wa == (tmp_path / "b" / "encoder" / "model.safetensors").read_bytes()
    assert a["best_step"] == b["best_step"]


def test_bad_tables_fail_with_clear_errors(spark, tiny_model_dir, tmp_path):
    from heads.tasks import LabelError
    from jobs.errors import InputError

    cfg = config(tmp_path, str(tiny_model_dir))
    bad = cfg.tasks[1].table.__class__(path=str(tmp_path / "sentiment.parquet"), split="file")
    with pytest.raises(InputError, match="split: file needs a folder"):
        train_encoder.read_task(spark, cfg.tasks[1].__class__(**{**cfg.tasks[1].__dict__, "table": bad}), 10)
    p = tmp_path / "stray.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["good", "bad"], "label": [1, 7], "split": ["train", "validation"]}), p)
    t = cfg.tasks[0].__class__(**{**cfg.tasks[0].__dict__, "table": cfg.tasks[0].table.__class__(path=str(p))})
    with pytest.raises(LabelError, match=r"column 'label' holds 7 \(row id 'b'\)"):   # the one label check
        train_encoder.read_task(spark, t, 10)
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["good", "bad", "ok"], "label": [0, 2, 2],
                             "split": ["train", "validation", "train"]}), p)
    unnamed = dataclasses.replace(cfg.tasks[1], labels=(), table=cfg.tasks[0].table.__class__(path=str(p)))
    with pytest.raises(LabelError, match="phantom class"):           # class 1 never occurs: refused, as train_heads does
        train_encoder.read_task(spark, unnamed, 10)


def test_torch_distributor_trains_with_two_processes(spark, tiny_model_dir, tmp_path):
    data_cfg = config(tmp_path, str(tiny_model_dir))
    cfg = build(train_encoder.TrainEncoderConfig, {
        **_as_data(data_cfg), "distributed": {"processes": 2, "local_mode": True}}, "test")
    manifest = train_encoder.run(cfg)
    lineage = json.loads((Path(cfg.output.path) / "lineage.json").read_text())
    assert manifest["processes"] == 2 and lineage["training_run"]["processes"] == 2
    assert load_encoder(cfg.output.path).fingerprint == manifest["model"]


def _as_data(cfg) -> dict:
    from encoder.typed_config import to_data

    d = to_data(cfg)
    d["output"] = {"path": cfg.output.path}
    return {k: d[k] for k in ("tasks", "encoder", "training", "output")}


@pytest.mark.spark
def test_real_model_train_then_embed_then_old_heads_are_refused(spark, pipeline, tmp_path):
    src = tmp_path / "sample.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 300), src)
    data = apply_overrides(read_yaml("conf/train_encoder.yaml"), [
        f"output.path={tmp_path / 'encoder'}", "training.max_steps=4", "training.eval_every=2",
        "training.texts_per_step=8", "training.val_rows=40", "encoder.device=cpu"])
    data["tasks"][0]["table"]["path"] = str(src)           # a few hundred rows of the shipped sample
    train_encoder.run(build(train_encoder.TrainEncoderConfig, data, "conf/train_encoder.yaml"))
    emb = tmp_path / "emb"
    m = embed.run(load_config(embed.EmbedConfig, "conf/embed.yaml", [
        f"input.path={src}", f"output.path={emb}", f"encoder.model={tmp_path / 'encoder'}", "output.mode=full"]))
    assert m["rows"]["written"] == 300
    old = json.loads((Path(pipeline["embed"]) / "manifest.json").read_text())
    assert m["feature_spec"]["fingerprint"] != old["feature_spec"]["fingerprint"]
    with pytest.raises(SpecMismatchError):
        apply_heads.run(load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
            f"embeddings={emb}", f"heads={pipeline['heads']}", f"output.path={tmp_path / 'pred'}"]))
