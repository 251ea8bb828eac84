"""A real Spark standalone cluster on this machine (master + 2 workers): the embed and apply jobs submitted with the
project as a wheel, and the faults a nightly run must survive, each with exact counts. Slow (spark-submit per run);
run in CI like every test (marker ``cluster``; not in ``make test-fast``).

Faults come from the test side: ``tests/faults/sitecustomize.py`` on the Python workers' path SIGKILLs a worker or
its executor JVM at a known point (see there). What ran where is read from the job's manifest (``workers``)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import cluster

from .conftest import ROOT, SAMPLE

PORT = 7177                      # not the default, so a user's cluster and this test do not meet
FAULTS = ROOT / "tests" / "faults"   # the test-side fault hook (sitecustomize.py)


def fault_env(fault: str, record: Path, path: str = "") -> dict[str, str]:
    """What turns the hook on in a Python worker: its folder first on the path, the fault, the file it records the
    kill in."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(FAULTS), path) if p), "TEXT_EMBED_TEST_FAULT": fault,
            "TEXT_EMBED_TEST_FAULT_RECORD": str(record)}


def fault_record(record: Path, fault: str) -> dict:
    """The hook's record of the kill it sent (it writes the file just before the SIGKILL, once per run)."""
    assert record.is_file(), f"the {fault} fault never fired"
    got = json.loads(record.read_text())
    assert got["fault"] == fault and got["partition"] == 0 and got["attempt"] == 0, got
    return got


def files(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """(master URL, state folder) of a 2-worker cluster kept for the module."""
    state = tmp_path_factory.mktemp("cluster")
    try:
        yield cluster.up(workers=2, cores=1, memory="3g", port=PORT, state=state), state
    finally:
        cluster.down(state)


@pytest.fixture(scope="module")
def slice_input(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cin") / "slice.parquet"
    pq.write_table(pq.read_table(SAMPLE, columns=["id", "text", "split"]).slice(0, 240), p)
    return p


def submit(spark_cluster, script: str, *args: str, fault: str | None = None, record: Path | None = None,
           wait: bool = True, **popen):
    """spark-submit a job to the cluster; with ``fault``, the hook kills what it names once (recorded in ``record``)."""
    url, state = spark_cluster
    conf = {f"spark.executorEnv.{k}": v for k, v in fault_env(fault, record).items()} if fault else {}
    cmd = cluster.submit_command(script, list(args), master=url, conf=conf, state=state)
    env = cluster.env(state)
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)


def why(r) -> str:
    """The lines of a failed spark-submit that say why (task losses, exceptions, causes), not the JVM stack."""
    keep = [x for x in r.stderr.splitlines() if any(k in x for k in ("Lost task", "Error", "Exception", "Caused by",
                                                                      "aborted", "ExecutorLost"))]
    return "\n".join(keep[-40:])[-6000:]


def embed_args(src: Path, out: Path, *more: str) -> list[str]:
    return ["--config", str(ROOT / "conf/embed.yaml"), "--set", f"input.path={src}", "--set", f"output.path={out}",
            "--set", "output.mode=full", *[x for m in more for x in ("--set", m)]]


def exact_ids(out: Path, src: Path) -> None:
    """0 rows lost, 0 duplicated."""
    got = pq.read_table(out / "embeddings", columns=["id"]).column("id").to_pylist()
    want = pq.read_table(src, columns=["id"]).column("id").to_pylist()
    assert len(got) == len(set(got)) and sorted(got) == sorted(want)


@pytest.mark.cluster
def test_embed_and_apply_run_on_the_cluster_from_the_wheel(spark_cluster, slice_input, tmp_path, pipeline):
    out = tmp_path / "emb"
    r = submit(spark_cluster, "jobs/embed.py", *embed_args(slice_input, out))
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["rows"] == {"in": 240, "written": 240, "quarantined": 0, "truncated": 0}
    exact_ids(out, slice_input)
    workers = m["workers"]              # every encoding task's process imported the project from the shipped wheel
    assert sum(w["tasks"] for w in workers) == m["encode_partitions"] == 2, workers
    assert all(w["project_code"].endswith(".zip") and not w["project_code"].startswith(str(ROOT))
               for w in workers), workers
    pred = tmp_path / "pred"
    r = submit(spark_cluster, "jobs/apply_heads.py", "--config", str(ROOT / "conf/apply_heads.yaml"), "--set",
               f"embeddings={out}", "--set", f"heads={pipeline['heads']}", "--set", f"output.path={pred}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((pred / "manifest.json").read_text())["rows"] == {"in": 240, "out": 240}


@pytest.mark.cluster
@pytest.mark.parametrize("fault", ["kill_worker", "kill_executor"])
def test_a_killed_python_worker_or_executor_is_survived_with_exact_counts(spark_cluster, slice_input, tmp_path,
                                                                          fault):
    out = tmp_path / "emb"
    record = tmp_path / "fault.json"
    r = submit(spark_cluster, "jobs/embed.py", *embed_args(slice_input, out), fault=fault, record=record)
    assert r.returncode == 0, why(r)
    killed = fault_record(record, fault)                  # the fault fired, once
    if fault == "kill_worker":
        assert killed["killed_pid"] == killed["worker_pid"]
    else:                                                 # the executor JVM above the worker, not the worker
        assert killed["killed_pid"] != killed["worker_pid"]
    assert "lost" in r.stderr.lower() or "failed" in r.stderr.lower()     # Spark saw the task fail
    exact_ids(out, slice_input)


@pytest.mark.cluster
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


@pytest.mark.spark
def test_the_default_local_master_retries_a_killed_worker(slice_input, tmp_path):
    out = tmp_path / "emb"
    record = tmp_path / "fault.json"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable,
               **fault_env("kill_worker", record, os.environ.get("PYTHONPATH", "")))
    r = subprocess.run([sys.executable, "-m", "jobs.embed", *embed_args(slice_input, out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert fault_record(record, "kill_worker")["killed_pid"] > 0
    exact_ids(out, slice_input)


def test_the_fault_hook_wraps_the_encoder_only_when_asked(tmp_path):
    """No JVM: the hook installs only with TEXT_EMBED_TEST_FAULT set, and then wraps jobs.worker.encode_partition."""
    code = "import jobs.worker as w; print(hasattr(w.encode_partition, '__wrapped__'))"
    for extra, wrapped in (({"PYTHONPATH": str(FAULTS)}, "False"), (fault_env("kill_worker", tmp_path / "r"), "True")):
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, **extra), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == wrapped, r.stderr[-2000:]
    assert not (tmp_path / "r").exists()          # importing fires nothing: only a Spark task of partition 0 can


@pytest.mark.cluster
def test_gpu_resources_reach_each_task(slice_input, tmp_path):
    """The GPU wiring on CPUs: workers announce one 'gpu' found by a discovery script, executors and tasks ask for one
    each (conf/gpu/spark-gpu.conf), and every task reads the address Spark assigned it; the device stays CPU."""
    script = tmp_path / "fake_gpus.sh"
    script.write_text('#!/usr/bin/env bash\necho \'{"name": "gpu", "addresses": ["0"]}\'\n')
    script.chmod(0o755)
    state = tmp_path / "gpu_cluster"
    try:
        url = cluster.up(workers=2, cores=1, memory="3g", port=PORT + 1, gpu_script=str(script), state=state)
        cmd = cluster.submit_command("jobs/embed.py", embed_args(slice_input, tmp_path / "emb", "encoder.device=cpu"),
                                     master=url, conf={"spark.executor.resource.gpu.discoveryScript": str(script)},
                                     state=state)
        cmd[1:1] = ["--properties-file", str(ROOT / "conf/gpu/spark-gpu.conf")]
        r = subprocess.run(cmd, env=cluster.env(state), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        cluster.down(state)
    m = json.loads((tmp_path / "emb" / "manifest.json").read_text())
    assert sum(w["tasks"] for w in m["workers"]) == m["encode_partitions"], m["workers"]
    assert all(w["gpu"] == ["0"] and w["device"] == "cpu" for w in m["workers"]), m["workers"]
    exact_ids(tmp_path / "emb", slice_input)
