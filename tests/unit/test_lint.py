"""The code has no unused imports, undefined names or other pyflakes findings."""

import subprocess
import sys

from tests.conftest import ROOT


def test_pyflakes_finds_nothing_in_the_code_and_tests():
    run = subprocess.run([sys.executable, "-m", "pyflakes", "app", "agents", "tables", "tests"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
