"""Shared fixtures: one local[2] SparkSession for the whole run, and a tiny random BERT saved like a real model.

Markers (pytest.ini): ``spark`` for a test that starts a JVM (the ``spark`` fixture, a job's ``run``/``main``, a
spark-submit), ``cluster`` for one that starts the standalone cluster. A test that uses the ``spark`` fixture, directly
or through another fixture, gets ``spark`` here on its own; ``make test-fast`` (``-m "not spark and not cluster"``)
runs the rest. An unmarked test that starts a JVM anyway fails: it runs with ``JAVA_HOME`` pointing at a ``java`` that
only records the attempt and exits, so a missing marker shows in ``make test-fast`` instead of slowing it down."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "goemotions_sample.parquet"
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "man", "is", "playing", "guitar", "someone",
              "strumming", "stock", "market", "fell", "today", "hello", "world", ".", ",", "good", "bad", "movie",
              "very", "not", "i", "you", "it", "was", "and", "of", "to", "in"]


JVM_MARKERS = ("spark", "cluster")
NO_JVM_LOG = "TEXT_EMBED_TEST_NO_JVM_LOG"
FAKE_JAVA = f"""#!/bin/sh
echo "$0 $*" >> "${{{NO_JVM_LOG}:-/dev/null}}"
echo "tests/conftest.py: this test started a JVM but is not marked spark or cluster" >&2
exit 97
"""


def pytest_collection_modifyitems(config, items):
    """Every test that uses the ``spark`` fixture (directly or through another fixture) is a ``spark`` test."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) and item.get_closest_marker("spark") is None:
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def _fake_java_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("no_jvm")
    (home / "bin").mkdir()
    java = home / "bin" / "java"
    java.write_text(FAKE_JAVA)
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return home


@pytest.fixture(autouse=True)
def _no_jvm_without_a_marker(request, monkeypatch, tmp_path_factory):
    """A test marked neither spark nor cluster must not start a JVM (in this process or a child)."""
    if any(request.node.get_closest_marker(m) for m in JVM_MARKERS):
        yield
        return
    log = tmp_path_factory.mktemp("jvm_log") / "java.log"
    monkeypatch.setenv("JAVA_HOME", str(request.getfixturevalue("_fake_java_home")))
    monkeypatch.setenv(NO_JVM_LOG, str(log))
    yield
    if log.exists():
        pytest.fail(f"{request.node.nodeid} started a JVM ({log.read_text().strip()}) but is not marked "
                    "spark or cluster (pytest.mark.spark, or use the spark fixture)", pytrace=False)


def crash_after(fn):
    """``fn`` that raises an injected OSError after it has done its work (e.g. after the data files are written)."""
    def wrapped(*args, **kwargs):
        fn(*args, **kwargs)
        raise OSError("disk full (injected)")
    return wrapped


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with a 34-word vocabulary, saved as safetensors + tokenizer files."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny_bert")
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(TINY_VOCAB)}, do_lower_case=True, model_max_length=512)
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=512)
    BertModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    assert (d / "model.safetensors").is_file()
    return d


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    from encoder.model import load_encoder

    return load_encoder(str(tiny_model_dir), device="cpu", threads=1)


@pytest.fixture(scope="session")
def real_loaded():
    from encoder.model import load_encoder

    return load_encoder("package", device="cpu", threads=2)


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    s = (SparkSession.builder.master("local[2]").appName("tests")
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.python.worker.reuse", "true")
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def pipeline(spark, tmp_path_factory):
    """The default pipeline (conf/*.yaml: embed -> train_heads -> apply_heads on the shipped sample with the real
    model; the sample's split column passed through) with outputs redirected to a temporary folder; shared by every module that reads its tables."""
    from jobs import apply_heads, embed, train_heads
    from jobs.common import load_config

    root = tmp_path_factory.mktemp("pipeline")
    emb, hd, pred = root / "embed", root / "heads", root / "predictions"
    # split passed through, so the predictions table's passthrough is exercised too
    embed.run(load_config(embed.EmbedConfig, "conf/embed.yaml", [f"output.path={emb}", "input.passthrough=[split]"]))
    train_cfg = load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml",
                            [f"embeddings={emb}", f"output.path={hd}"])
    train_manifest = train_heads.run(train_cfg)
    apply_manifest = apply_heads.run(load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
        f"embeddings={emb}", f"heads={hd}", f"output.path={pred}"]))
    return {"embed": emb, "heads": hd, "pred": pred, "train": train_manifest, "apply": apply_manifest,
            "train_cfg": train_cfg}
