"""Shared benchmark set-up: make the project importable, stay offline, flush lines, find ../shared/data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
if sys.path[0] != str(ROOT):   # first, even when PYTHONPATH has it: the project's `search` package, not bench/search.py
    sys.path.insert(0, str(ROOT))
sys.stdout.reconfigure(line_buffering=True)  # progress shows even when redirected to a file
for key, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
                   "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}.items():
    os.environ.setdefault(key, value)


def require_data() -> Path:
    """The shared data folder, or exit with a clear message when it is absent."""
    if not DATA.is_dir():
        sys.exit(f"{Path(sys.argv[0]).name} needs the shared data sets at {DATA} (not found)")
    return DATA
