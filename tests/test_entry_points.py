"""The embed job runs the same under spark-submit; device selection falls back to the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from encoder.encode import FeatureExtractor
from encoder.encoder_config import EncoderConfig
from encoder.spec import FeatureSpec

from .conftest import ROOT, SAMPLE


@pytest.mark.spark
def test_spark_submit_runs_the_embed_job(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 60), src)
    out = tmp_path / "emb"
    submit = Path(sys.executable).parent / "spark-submit"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    r = subprocess.run([str(submit), "--master", "local[2]", str(ROOT / "jobs" / "embed.py"), "--config",
                        str(ROOT / "conf" / "embed.yaml"), "--set", f"input.path={src}", "--set",
                        f"output.path={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["written"] == 60
    assert pq.read_table(out / "embeddings").num_rows == 60
    assert FeatureSpec.load(out).fingerprint == manifest["feature_spec"]["fingerprint"]
    assert "embed: rows_in=60 written=60" in r.stdout + r.stderr  # PythonRunner merges stderr into stdout


def test_device_selection_without_a_gpu():
    import torch

    from jobs.worker import task_device_and_threads

    assert task_device_and_threads("cpu") == ("cpu", 1)
    if not torch.cuda.is_available():
        assert task_device_and_threads("auto") == ("cpu", 1)
        with pytest.raises(RuntimeError, match="no CUDA device"):
            task_device_and_threads("cuda")


def test_autocast_is_ignored_on_cpu(tiny_loaded):
    fx = FeatureExtractor(tiny_loaded, EncoderConfig(autocast="fp16"))
    assert fx.autocast == "none"
    ref = FeatureExtractor(tiny_loaded, EncoderConfig(autocast="none")).features(["hello world"]).values
    assert (fx.features(["hello world"]).values == ref).all()
