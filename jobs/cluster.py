"""A Spark standalone cluster on this machine (one master, N workers), started from the launcher the pyspark
package ships (``spark-class org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), and the way jobs are
submitted to it with the project shipped as a wheel.

    python -m jobs.cluster up [--workers 2 --cores 1 --memory 4g]    # make cluster-up
    python -m jobs.cluster down                                       # make cluster-down
    python -m jobs.cluster status
    python -m jobs.cluster submit jobs/embed.py --config conf/embed.yaml --set ...   # make embed-cluster

Logs and pid files live under ``out/cluster/`` (git-ignored). ``submit`` builds the project's wheel
(``out/cluster/dist``) and passes it with ``--py-files``: executors import the project from the wheel (it comes
first on their path), not from the driver's working directory.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("TEXT_EMBED_CLUSTER_DIR", ROOT / "out" / "cluster"))   # tests use their own
HOST = "127.0.0.1"
MASTER_PORT = int(os.environ.get("TEXT_EMBED_CLUSTER_PORT", "7077"))


def master_url(port: int = MASTER_PORT) -> str:
    return f"spark://{HOST}:{port}"


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"SPARK_HOME": str(_spark_home()), "SPARK_LOCAL_IP": HOST, "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "SPARK_LOG_DIR": str(STATE / "logs")})
    return env


def _start(name: str, args: list[str], env: dict[str, str] | None = None) -> int:
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    log = open(STATE / "logs" / f"{name}.log", "ab")
    p = subprocess.Popen([str(_spark_home() / "bin" / "spark-class"), *args], stdout=log, stderr=subprocess.STDOUT,
                         env=_env() | (env or {}), start_new_session=True)
    (STATE / f"{name}.pid").write_text(str(p.pid))
    return p.pid


def _wait_port(port: int, seconds: float = 60) -> None:
    t = time.time()
    while time.time() - t < seconds:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {seconds:.0f} s; see {STATE / 'logs'}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids() -> dict[str, int]:
    """Cluster processes started by ``up`` that are still alive, by name (master, worker-1, ...)."""
    out = {}
    for f in sorted(STATE.glob("*.pid")):
        pid = int(f.read_text())
        if _alive(pid):
            out[f.stem] = pid
    return out


def up(workers: int = 2, cores: int = 1, memory: str = "4g", port: int = MASTER_PORT,
       gpu_script: str | None = None, gpus: int = 1) -> str:
    """Start the master and ``workers`` workers (``cores`` cores, ``memory`` each); wait until all registered. With
    ``gpu_script``, each worker announces ``gpus`` GPUs found by that discovery script."""
    if pids():
        raise RuntimeError(f"a cluster is already running ({pids()}); run `make cluster-down` first")
    _start("master", args=["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port),
                      "--webui-port", "0"])
    _wait_port(port)
    env = ({"SPARK_WORKER_OPTS": f"-Dspark.worker.resource.gpu.amount={gpus} "
                                 f"-Dspark.worker.resource.gpu.discoveryScript={gpu_script}"} if gpu_script else {})
    for i in range(1, workers + 1):
        _start(f"worker-{i}", env=env, args=["org.apache.spark.deploy.worker.Worker", master_url(port), "--host", HOST,
                                             "--cores", str(cores), "--memory", memory, "--webui-port", "0",
                                             "--work-dir", str(STATE / "work")])
    _wait_workers(workers)
    return master_url(port)


def _wait_workers(n: int, seconds: float = 90) -> None:
    """The master log says each worker registered."""
    t = time.time()
    while time.time() - t < seconds:
        text = (STATE / "logs" / "master.log").read_text(errors="replace")
        if text.count("Registering worker") >= n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {n} workers registered after {seconds:.0f} s; see {STATE / 'logs'}")


def down() -> list[str]:
    """Stop every process ``up`` started (workers first), and their executors."""
    stopped = []
    for name, pid in sorted(pids().items(), key=lambda kv: kv[0] == "master"):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopped.append(name)
    deadline = time.time() + 20
    for name, pid in list(pids().items()):
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    for f in STATE.glob("*.pid"):
        f.unlink()
    return stopped


def wheel() -> Path:
    """Build the project's wheel (pure Python) into out/cluster/dist and return it as a ``.zip``: a pure-Python wheel
    is a zip archive with the packages at its root, but PySpark only puts ``.zip``/``.egg``/``.jar`` py-files on the
    executors' path (a ``.whl`` is shipped and then silently ignored, and executors fall back to whatever copy of the
    project their interpreter finds)."""
    dist = STATE / "dist"
    for old in [*dist.glob("*.whl"), *dist.glob("*.zip")]:
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True)
    whl = next(dist.glob("*.whl"))
    return whl.rename(whl.with_suffix(".zip"))


def submit_command(script: str, args: list[str], master: str | None = None, conf: dict | None = None) -> list[str]:
    """The spark-submit line for a job on the cluster, the wheel shipped to executors."""
    extra = [x for k, v in (conf or {}).items() for x in ("--conf", f"{k}={v}")]
    return [str(_spark_home() / "bin" / "spark-submit"), "--master", master or master_url(),
            "--py-files", str(wheel()), *extra, "--conf", f"spark.executorEnv.PYSPARK_PYTHON={sys.executable}",
            "--conf", "spark.task.maxFailures=4", "--conf", "spark.python.worker.reuse=true",
            "--conf", "spark.executor.memory=2g",
            "--conf", "spark.executorEnv.HF_HUB_OFFLINE=1", str(ROOT / script), *args]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs.cluster", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--workers", type=int, default=2)
    u.add_argument("--cores", type=int, default=1)
    u.add_argument("--memory", default="4g")
    sub.add_parser("down")
    sub.add_parser("status")
    s = sub.add_parser("submit")
    s.add_argument("script")
    s.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.cmd == "up":
        print(f"cluster up: {up(a.workers, a.cores, a.memory)} ({a.workers} workers x {a.cores} core); logs in "
              f"{STATE / 'logs'}")
    elif a.cmd == "down":
        print(f"stopped: {', '.join(down()) or 'nothing was running'}")
    elif a.cmd == "status":
        print(pids() or "no cluster running")
    else:
        cmd = submit_command(a.script, a.args)
        print(" ".join(cmd), flush=True)
        return subprocess.call(cmd, env=_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
