"""A Spark standalone cluster on this machine (one master, N workers), started from the launcher the pyspark
package ships (``spark-class org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), and the way jobs are
submitted to it with the project shipped as a wheel.

    python -m jobs.cluster up [--workers 2 --cores 1 --memory 4g]    # make cluster-up
    python -m jobs.cluster down                                       # make cluster-down
    python -m jobs.cluster status
    python -m jobs.cluster submit jobs/embed.py --config conf/embed.yaml --set ...   # make embed-cluster

Logs, pid files, work folders and the wheel live in the cluster's state folder: ``--state-dir``, else
$TEXT_EMBED_CLUSTER_DIR, else ``out/cluster/`` (git-ignored), resolved when a command runs (``state_dir``); the master
port likewise (``--port``, $TEXT_EMBED_CLUSTER_PORT, 7077). ``submit`` builds the project's wheel
(``out/cluster/dist``) and passes it with ``--py-files``: executors import the project from the wheel (it comes
first on their path), not from the driver's working directory.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE = ROOT / "out" / "cluster"
DEFAULT_PORT = 7077
STATE_ENV, PORT_ENV = "TEXT_EMBED_CLUSTER_DIR", "TEXT_EMBED_CLUSTER_PORT"
HOST = "127.0.0.1"


def state_dir(state: str | Path | None = None) -> Path:
    """A cluster's state folder (logs, pid files, work folders, the wheel): ``state``, else $TEXT_EMBED_CLUSTER_DIR,
    else out/cluster; read when called, so a caller (or a test) passes its own instead of changing a global."""
    return Path(state or os.environ.get(STATE_ENV) or DEFAULT_STATE)


def master_port(port: int | None = None) -> int:
    """``port``, else $TEXT_EMBED_CLUSTER_PORT, else 7077."""
    return int(port or os.environ.get(PORT_ENV) or DEFAULT_PORT)


def master_url(port: int | None = None) -> str:
    return f"spark://{HOST}:{master_port(port)}"


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def env(state: str | Path | None = None) -> dict[str, str]:
    """The environment the cluster's processes and spark-submit run with."""
    out = dict(os.environ)
    out.update({"SPARK_HOME": str(_spark_home()), "SPARK_LOCAL_IP": HOST, "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_NO_DAEMONIZE": "1", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "SPARK_LOG_DIR": str(state_dir(state) / "logs")})
    return out


def _start(state: Path, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> int:
    (state / "logs").mkdir(parents=True, exist_ok=True)
    log = open(state / "logs" / f"{name}.log", "ab")
    p = subprocess.Popen([str(_spark_home() / "bin" / "spark-class"), *args], stdout=log, stderr=subprocess.STDOUT,
                         env=env(state) | (extra_env or {}), start_new_session=True)
    (state / f"{name}.pid").write_text(str(p.pid))
    return p.pid


def _wait_port(port: int, state: Path, seconds: float = 60) -> None:
    t = time.time()
    while time.time() - t < seconds:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {seconds:.0f} s; see {state / 'logs'}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids(state: str | Path | None = None) -> dict[str, int]:
    """Cluster processes started by ``up`` that are still alive, by name (master, worker-1, ...)."""
    out = {}
    for f in sorted(state_dir(state).glob("*.pid")):
        pid = int(f.read_text())
        if _alive(pid):
            out[f.stem] = pid
    return out


def up(workers: int = 2, cores: int = 1, memory: str = "4g", port: int | None = None,
       gpu_script: str | None = None, gpus: int = 1, state: str | Path | None = None) -> str:
    """Start the master and ``workers`` workers (``cores`` cores, ``memory`` each) with their logs, pids and work
    folders in ``state`` (``state_dir``); wait until all registered. With ``gpu_script``, each worker announces
    ``gpus`` GPUs found by that discovery script."""
    state, port = state_dir(state), master_port(port)
    if pids(state):
        raise RuntimeError(f"a cluster is already running ({pids(state)}); run `make cluster-down` first")
    _start(state, "master", args=["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port),
                                  "--webui-port", "0"])
    _wait_port(port, state)
    opts = ({"SPARK_WORKER_OPTS": f"-Dspark.worker.resource.gpu.amount={gpus} "
                                  f"-Dspark.worker.resource.gpu.discoveryScript={gpu_script}"} if gpu_script else {})
    for i in range(1, workers + 1):
        _start(state, f"worker-{i}", extra_env=opts,
               args=["org.apache.spark.deploy.worker.Worker", master_url(port), "--host", HOST, "--cores", str(cores),
                     "--memory", memory, "--webui-port", "0", "--work-dir", str(state / "work")])
    _wait_workers(workers, state)
    return master_url(port)


def _wait_workers(n: int, state: Path, seconds: float = 90) -> None:
    """The master log says each worker registered."""
    t = time.time()
    while time.time() - t < seconds:
        text = (state / "logs" / "master.log").read_text(errors="replace")
        if text.count("Registering worker") >= n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {n} workers registered after {seconds:.0f} s; see {state / 'logs'}")


def down(state: str | Path | None = None) -> list[str]:
    """Stop every process ``up`` started in ``state`` (workers first), and their executors."""
    state = state_dir(state)
    stopped = []
    for name, pid in sorted(pids(state).items(), key=lambda kv: kv[0] == "master"):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopped.append(name)
    deadline = time.time() + 20
    for name, pid in list(pids(state).items()):
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    for f in state.glob("*.pid"):
        f.unlink()
    return stopped


def wheel(state: str | Path | None = None) -> Path:
    """Build the project's wheel (pure Python) into the state folder's dist/ and return it as a ``.zip``: a pure-Python wheel
    is a zip archive with the packages at its root, but PySpark only puts ``.zip``/``.egg``/``.jar`` py-files on the
    executors' path (a ``.whl`` is shipped and then silently ignored, and executors fall back to whatever copy of the
    project their interpreter finds)."""
    dist = state_dir(state) / "dist"
    for old in [*dist.glob("*.whl"), *dist.glob("*.zip")]:
        old.unlink()
    # built from a scratch copy of the sources: setuptools' build/ folder would otherwise sit in the checkout, a
    # second copy of every module, and a module deleted since the last build would still be shipped from it
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".*", "build", "out", "*.egg-info", "__pycache__",
                                                                   "spark-warehouse", "metastore_db"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(dist), str(src)], check=True)
    whl = next(dist.glob("*.whl"))
    return whl.rename(whl.with_suffix(".zip"))


def submit_command(script: str, args: list[str], master: str | None = None, conf: dict | None = None,
                   state: str | Path | None = None) -> list[str]:
    """The spark-submit line for a job on the cluster, the wheel (built in ``state``) shipped to executors."""
    extra = [x for k, v in (conf or {}).items() for x in ("--conf", f"{k}={v}")]
    return [str(_spark_home() / "bin" / "spark-submit"), "--master", master or master_url(),
            "--py-files", str(wheel(state)), *extra, "--conf", f"spark.executorEnv.PYSPARK_PYTHON={sys.executable}",
            "--conf", "spark.task.maxFailures=4", "--conf", "spark.python.worker.reuse=true",
            "--conf", "spark.executor.memory=2g",
            "--conf", "spark.executorEnv.HF_HUB_OFFLINE=1", str(ROOT / script), *args]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs.cluster", description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", default=None, help=f"logs, pids, work folders, the wheel (default: ${STATE_ENV} "
                   f"or {DEFAULT_STATE.relative_to(ROOT)})")
    p.add_argument("--port", type=int, default=None, help=f"master port (default: ${PORT_ENV} or {DEFAULT_PORT})")
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
    state = state_dir(a.state_dir)
    if a.cmd == "up":
        url = up(a.workers, a.cores, a.memory, port=a.port, state=state)
        print(f"cluster up: {url} ({a.workers} workers x {a.cores} core); logs in {state / 'logs'}")
    elif a.cmd == "down":
        print(f"stopped: {', '.join(down(state)) or 'nothing was running'}")
    elif a.cmd == "status":
        print(pids(state) or "no cluster running")
    else:
        cmd = submit_command(a.script, a.args, master=master_url(a.port), state=state)
        print(" ".join(cmd), flush=True)
        return subprocess.call(cmd, env=env(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
