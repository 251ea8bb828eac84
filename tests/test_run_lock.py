"""One run at a time per output path: a second live run is refused at start (exit code 7); a killed run holds no
lock, and the next run removes its unfinished folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import publish
from jobs.errors import exit_code

from .conftest import ROOT

HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from jobs import publish
run_id, staging = publish.begin_run({out!r})
(staging / "part-00000.parquet").write_bytes(b"half written")
print(staging, flush=True)
time.sleep(600)
"""


def start_holder(out: Path) -> tuple[subprocess.Popen, Path]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), out=str(out))],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()          # the holder has the lock once it printed its staging folder
    assert line, "the holder process did not start"
    return p, Path(line)


def test_a_second_run_is_refused_and_a_killed_run_holds_nothing(tmp_path):
    out = tmp_path / "table"
    first_id, first = publish.begin_run(out)
    publish.publish(out, first)                  # a good published run
    holder, staging = start_holder(out)
    try:
        with pytest.raises(publish.OutputLockedError, match=f"\"pid\": {holder.pid}") as err:
            publish.begin_run(out)
        assert exit_code(err.value) == 7
        assert staging.is_dir() and out.resolve() == first.resolve()          # nothing touched
    finally:
        os.kill(holder.pid, signal.SIGKILL)      # the run dies mid-write
        holder.wait()
    time.sleep(0.1)
    run_id, nxt = publish.begin_run(out)        # the lock went with the process
    assert not staging.exists()                  # the dead run's folder is removed
    assert first.is_dir() and out.resolve() == first.resolve()
    publish.publish(out, nxt)
    assert out.resolve() == nxt.resolve()
    publish.begin_run(out)                       # and the lock is free again after a publish
