"""Writing and checking the Parquet tables that jobs publish."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_table(df, path: Path, compression: str) -> None:
    """Write one Parquet table with Spark and give its files stable names (so reruns are byte-comparable)."""
    df.write.mode("errorifexists").option("compression", compression).parquet(path.as_uri())
    for i, f in enumerate(sorted(path.glob("part-*.parquet"))):
        suffix = f.name.split(".", 1)[1] if "." in f.name else "parquet"
        target = path / f"part-{i:05d}.{suffix}"
        crc = path / f".{f.name}.crc"
        f.rename(target)
        if crc.exists():
            crc.rename(path / f".{target.name}.crc")


def parquet_rows(path: Path) -> int:
    """Row count from the Parquet footers (no data scan)."""
    return sum(pq.read_metadata(f).num_rows for f in sorted(path.glob("*.parquet")))


def check_table(path: Path, expected: pa.Schema) -> None:
    """The written files carry exactly the expected columns and types."""
    files = sorted(path.glob("*.parquet"))
    for f in files:
        got = pq.read_schema(f)
        if [(x.name, x.type) for x in got] != [(x.name, x.type) for x in expected]:
            raise RuntimeError(f"{f} has schema {got}; expected {expected}")
