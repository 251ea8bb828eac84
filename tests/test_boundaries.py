import subprocess
import sys


def test_libraries_do_not_import_spark():
    code = ("import sys, encoder, encoder.encode, encoder.table, encoder.settings, heads; "
            "bad = [m for m in sys.modules if m.startswith(('pyspark', 'petastorm.spark'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
