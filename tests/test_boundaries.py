"""The layering the design card promises, derived from the folders (a new module or job is covered without editing
this file): the libraries never import Spark; imports point one way (encoder at the bottom; heads, search and
planning on it; tuning on encoder and heads; jobs on top); no job imports another job."""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

# package -> the project packages it may import (besides itself)
LAYERS = {
    "encoder": set(),
    "heads": {"encoder"},
    "search": {"encoder"},
    "planning": {"encoder"},
    "tuning": {"encoder", "heads"},
}
PROJECT = set(LAYERS) | {"jobs", "tests", "bench"}


def modules_of(package: str) -> list[str]:
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(ROOT / package)])]


def job_modules() -> list[str]:
    """Every entry point under jobs/ (a module that runs as ``python -m jobs.NAME``)."""
    return sorted(p.stem for p in (ROOT / "jobs").glob("*.py")
                  if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8"))


def test_the_folders_hold_the_packages_and_jobs_the_layering_names():
    assert {"embed", "train_heads", "apply_heads", "train_encoder", "neighbours", "sql", "describe", "plan",
            "cluster"} <= set(job_modules())
    found = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests"}
    assert found == set(LAYERS) | {"jobs"}, found        # a new library package must be given its layer here


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_libraries_do_not_import_spark_or_a_higher_layer(package):
    mods = modules_of(package)
    banned = tuple(sorted(PROJECT - LAYERS[package] - {package})) + ("pyspark", "petastorm.spark")
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {mods!r}]; "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {banned!r} or m.startswith({banned!r})); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_library_sources_import_only_lower_layers(package):
    """The static check: also catches imports inside functions, which the import test above never runs."""
    allowed = LAYERS[package] | {package}
    for path in sorted((ROOT / package).glob("*.py")):
        tops = {m.split(".")[0] for m in imported_modules(path)}
        assert not (tops & PROJECT) - allowed, f"{path.name} imports {sorted((tops & PROJECT) - allowed)}"


@pytest.mark.parametrize("job", job_modules())
def test_no_job_imports_another_job(job):
    imports = imported_modules(ROOT / "jobs" / f"{job}.py")
    others = {f"jobs.{j}" for j in job_modules() if j != job}
    assert not imports & others, imports & others
