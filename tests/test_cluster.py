"""A real Spark standalone cluster on this machine (master + 2 workers): the embed and apply jobs submitted with the
project as a wheel, and the faults a nightly run must survive, each with exact counts. Slow (spark-submit per run);
run in CI like every test."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import cluster, worker

from .conftest import ROOT, SAMPLE

pytestmark = pytest.mark.e2e
PORT = 7177                      # not the default, so a user's cluster and this test do not meet


def files(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    saved = cluster.STATE
    cluster.STATE = state
    try:
        url = cluster.up(workers=2, cores=1, memory="3g", port=PORT)
        yield url
    finally:
        cluster.down()
        cluster.STATE = saved


@pytest.fixture(scope="module")
def slice_input(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cin") / "slice.parquet"
    pq.write_table(pq.read_table(SAMPLE, columns=["id", "text", "split"]).slice(0, 240), p)
    return p


def submit(url: str, script: str, *args: str, fault: str | None = None, wait: bool = True, once: Path | None = None,
           **popen):
    once = once or cluster.STATE / f"fault-{time.time_ns()}.once"     # each injected fault fires once per run
    conf = {"spark.executorEnv." + worker.FAULT_ENV: fault, "spark.executorEnv." + worker.FAULT_ONCE_ENV: str(once)} \
        if fault else {}
    cmd = cluster.submit_command(script, list(args), master=url, conf=conf)
    env = cluster._env()
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)


def why(r) -> str:
    """The lines of a failed spark-submit that say why (task losses, exceptions, causes), not the JVM stack."""
    keep = [x for x in r.stderr.splitlines() if any(k in x for k in ("Lost task", "Error", "Exception", "Caused by",
                                                                      "injected", "aborted", "ExecutorLost"))]
    return "\n".join(keep[-40:])[-6000:]


def embed_args(src: Path, out: Path, *more: str) -> list[str]:
    return ["--config", str(ROOT / "conf/embed.yaml"), "--set", f"input.path={src}", "--set", f"output.path={out}",
            "--set", "output.mode=full", *[x for m in more for x in ("--set", m)]]


def exact_ids(out: Path, src: Path) -> None:
    """0 rows lost, 0 duplicated."""
    got = pq.read_table(out / "embeddings", columns=["id"]).column("id").to_pylist()
    want = pq.read_table(src, columns=["id"]).column("id").to_pylist()
    assert len(got) == len(set(got)) and sorted(got) == sorted(want)


def test_embed_and_apply_run_on_the_cluster_from_the_wheel(spark_cluster, slice_input, tmp_path, pipeline):
    out = tmp_path / "emb"
    r = submit(spark_cluster, "jobs/embed.py", *embed_args(slice_input, out))
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["rows"] == {"in": 240, "written": 240, "quarantined": 0, "truncated": 0}
    exact_ids(out, slice_input)
    logs = "\n".join(p.read_text(errors="replace") for p in cluster.STATE.glob("work/*/*/stderr"))
    found = re.findall(r"project code from (\S+)", logs)
    assert found and all(f.endswith(".zip") and not f.startswith(str(ROOT)) for f in found), found  # from the wheel
    pred = tmp_path / "pred"
    r = submit(spark_cluster, "jobs/apply_heads.py", "--config", str(ROOT / "conf/apply_heads.yaml"), "--set",
               f"embeddings={out}", "--set", f"heads={pipeline['heads']}", "--set", f"output.path={pred}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((pred / "manifest.json").read_text())["rows"] == {"in": 240, "out": 240}


@pytest.mark.parametrize("fault", ["kill_worker", "kill_executor"])
def test_a_killed_python_worker_or_executor_is_survived_with_exact_counts(spark_cluster, slice_input, tmp_path,
                                                                          fault):
    out = tmp_path / "emb"
    once = tmp_path / "fault.once"
    r = submit(spark_cluster, "jobs/embed.py", *embed_args(slice_input, out), fault=fault, once=once)
    assert r.returncode == 0, why(r)
    assert once.exists()                                  # the fault fired (the file is made just before the kill)
    assert "lost" in r.stderr.lower() or "failed" in r.stderr.lower()
    exact_ids(out, slice_input)


def test_a_driver_killed_mid_write_leaves_the_table_and_the_next_run_cleans_up(spark_cluster, slice_input, tmp_path):
    out = tmp_path / "emb"
    assert submit(spark_cluster, "jobs/embed.py", *embed_args(slice_input, out)).returncode == 0
    before = (out.resolve(), files(out / "embeddings"))
    p = submit(spark_cluster, "jobs/embed.py", *embed_args(slice_input, out), wait=False, start_new_session=True)
    runs = Path(str(out) + ".runs")
    deadline = time.time() + 300
    while time.time() < deadline:                      # the new run has started writing its embeddings
        staging = [d for d in runs.iterdir() if d.is_dir() and d != before[0] and (d / "embeddings").exists()]
        if staging:
            break
        time.sleep(0.2)
    assert staging, "the second run never started writing"
    os.killpg(p.pid, signal.SIGKILL)                   # the driver (spark-submit JVM + Python) dies mid-write
    p.wait()
    assert (out.resolve(), files(out / "embeddings")) == before          # the published table is untouched
    r = submit(spark_cluster, "jobs/embed.py", *embed_args(slice_input, out))
    assert r.returncode == 0, r.stderr[-3000:]                            # no stale lock: the dead run held none
    assert not staging[0].exists()                                        # and its folder is gone
    exact_ids(out, slice_input)


def test_the_default_local_master_retries_a_killed_worker(slice_input, tmp_path):
    out = tmp_path / "emb"
    env = dict(os.environ, **{worker.FAULT_ENV: "kill_worker", "PYSPARK_PYTHON": sys.executable})
    r = subprocess.run([sys.executable, "-m", "jobs.embed", *embed_args(slice_input, out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "injected fault kill_worker" in r.stderr
    exact_ids(out, slice_input)


def test_gpu_resources_reach_each_task(slice_input, tmp_path):
    """The GPU wiring on CPUs: workers announce one 'gpu' found by a discovery script, executors and tasks ask for one
    each (conf/gpu/spark-gpu.conf), and every task reads the address Spark assigned it; the device stays CPU."""
    script = tmp_path / "fake_gpus.sh"
    script.write_text('#!/usr/bin/env bash\necho \'{"name": "gpu", "addresses": ["0"]}\'\n')
    script.chmod(0o755)
    saved = cluster.STATE
    cluster.STATE = tmp_path / "gpu_cluster"
    try:
        url = cluster.up(workers=2, cores=1, memory="3g", port=PORT + 1, gpu_script=str(script))
        cmd = cluster.submit_command("jobs/embed.py", embed_args(slice_input, tmp_path / "emb", "encoder.device=cpu"),
                                     master=url, conf={"spark.executor.resource.gpu.discoveryScript": str(script)})
        cmd[1:1] = ["--properties-file", str(ROOT / "conf/gpu/spark-gpu.conf")]
        r = subprocess.run(cmd, env=cluster._env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        logs = "\n".join(p.read_text(errors="replace") for p in cluster.STATE.glob("work/*/*/stderr"))
    finally:
        cluster.down()
        cluster.STATE = saved
    assert "assigned gpu ['0']; encoder.device = cpu" in logs
    exact_ids(tmp_path / "emb", slice_input)
