"""What every job shares: the CLI, logging, the Spark session, version facts."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from encoder.typed_config import ConfigError, apply_overrides, build, read_yaml
from jobs.errors import exit_code, one_line

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparkSettings:
    """How the job gets its SparkSession. Under spark-submit the submitted master wins."""

    master: str = "local[2,4]"          # one task per core on the 2-core machine, a task retried up to 4 times
    app_name: str = ""                  # default: the job's name
    arrow_batch_rows: int = 512         # rows per Arrow batch into Python (Spark's default 10000 is too coarse)
    shuffle_partitions: int = 8         # small default; raise on a cluster
    conf: dict[str, Any] = field(default_factory=dict)  # any other spark.* settings, passed through

    def validate(self, source: str, prefix: str) -> None:
        for key, value in self.conf.items():   # Spark takes strings: a list or mapping here is a mistake (or a bomb)
            if not isinstance(key, str):
                raise ConfigError(source, f"{prefix}conf.{key}", "is not a string; Spark settings are named spark.*")
            if not isinstance(value, (str, int, float)):   # bool is an int
                kind = "null" if value is None else "mapping" if isinstance(value, dict) else type(value).__name__
                raise ConfigError(source, f"{prefix}conf.{key}", f"is a {kind}; a Spark setting is a string, number "
                                  "or true/false")


def parse_args(argv: list[str] | None, prog: str, default_config: str, dry_run: bool = False) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=f"Run the {prog} job.")
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="check the config, the model and the input (columns, "
                       "row counts, faults by reason) without encoding or writing anything; prints JSON")
    p.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set output.path=/data/emb (repeatable)")
    return p.parse_args(argv)


def load_config(cls: type[T], path: str, overrides: list[str] | None = None) -> T:
    """Read YAML safely, apply --set overrides, build and validate the job's frozen config tree."""
    data = apply_overrides(read_yaml(path), overrides or [], source=path)
    return build(cls, data, source=path)


def setup_logging() -> None:
    """Entry points only: one format, INFO for our packages, WARN for Spark's chatter."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("py4j", "pyspark", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def spark_session(settings: SparkSettings, app_name: str):
    """Get or create the SparkSession; workers run this interpreter (so they see the same packages)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(settings.app_name or app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit: our master applies
        builder = (builder.master(settings.master).config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false"))
    builder = (builder.config("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.arrow_batch_rows))
               .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
               .config("spark.python.worker.reuse", "true")   # keeps the model loaded between tasks
               .config("spark.sql.session.timeZone", "UTC"))
    for key, value in settings.conf.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def run_main(fn: Callable[[Any], Any], argv: list[str] | None, prog: str, default_config: str, cls: type,
             dry_run: Callable[[Any], Any] | None = None) -> int:
    """Parse args, load the config before Spark starts, run. A known error (``jobs.errors``) ends the job with one
    line on stderr and its documented exit code; an unexpected one keeps its traceback (exit code 1). Every run that
    got past its config is recorded in the output's run log (``jobs.publish.log_run``)."""
    args = parse_args(argv, prog, default_config, dry_run is not None)
    setup_logging()
    cfg = None
    started = datetime.now(timezone.utc)
    try:
        cfg = load_config(cls, args.config, args.overrides)
        if getattr(args, "dry_run", False):
            print(json.dumps(dry_run(cfg), indent=2, sort_keys=True, default=str))   # type: ignore[misc]
            return 0
        manifest = fn(cfg) or {}
    except BaseException as exc:  # noqa: BLE001 - known errors become exit codes, the rest re-raise
        code = exit_code(exc) if isinstance(exc, Exception) else None
        _log(cfg, prog, started, "failed", {"exit_code": 1 if code is None else code, "error": one_line(exc)})
        if code is None:
            raise
        print(f"{prog}: {one_line(exc)}", file=sys.stderr)
        return code
    _log(cfg, prog, started, "published", {"exit_code": 0, "rows": manifest.get("rows"),
                                           "spec": manifest.get("feature_spec", {}).get("fingerprint")
                                           or manifest.get("feature_spec_fingerprint"),
                                           **{k: manifest[k] for k in ("counts",) if k in manifest}})
    return 0


def _log(cfg, prog: str, started: datetime, status: str, facts: dict) -> None:
    output = getattr(getattr(cfg, "output", None), "path", None)
    if output is None:
        return
    from jobs.publish import log_run

    now = datetime.now(timezone.utc)
    try:
        log_run(output, {"job": prog, "status": status, "started_at": started.isoformat(timespec="seconds"),
                         "finished_at": now.isoformat(timespec="seconds"),
                         "seconds": round((now - started).total_seconds(), 2), **facts})
    except OSError as exc:   # the run log must never turn a result into a failure
        logger.warning("could not append to the run log of %s: %s", output, exc)
