"""The layering the design card promises: encoder/ and heads/ never import Spark, encoder/ never imports heads/, and
no job imports another job."""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

JOBS = ("embed", "train_heads", "apply_heads")


def modules_of(package: str) -> list[str]:
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(ROOT / package)])]


def test_every_library_module_is_found():
    mods = modules_of("encoder") + modules_of("heads")
    assert {"heads.data", "heads.train", "heads.score", "heads.io", "heads.predict", "heads.fitted",
            "encoder.encode", "encoder.build_spec", "encoder.table"} <= set(mods)


@pytest.mark.parametrize("package", ["encoder", "heads"])
def test_libraries_do_not_import_spark(package):
    mods = modules_of(package)
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {mods!r}]; "
            "bad = [m for m in sys.modules if m.startswith(('pyspark', 'petastorm.spark', 'jobs'))]; "
            "bad += [m for m in sys.modules if m.startswith('heads') and " + repr(package) + " == 'encoder']; "
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


@pytest.mark.parametrize("job", JOBS)
def test_no_job_imports_another_job(job):
    imports = imported_modules(ROOT / "jobs" / f"{job}.py")
    others = {f"jobs.{j}" for j in JOBS if j != job}
    assert not imports & others, imports & others
