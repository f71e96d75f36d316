"""Superset (slow; runs in CI): Apache Superset in a throw-away virtual environment, with sqlmpc installed
next to it, picks the engine spec from the entry point, reflects ``bureau.persons`` and runs a bar chart's
query, whose rows must equal the DB-API's (tests/superset_check.py, inside that environment).

Superset is installed first and sqlmpc over it, in two steps: Superset 6.1 declares ``sqlglot<29`` and
sqlmpc pins ``sqlglot`` 30.30 (its internals are used), so one resolver run cannot satisfy both (pip
backtracks through every older Superset).  Superset's chart path works with sqlmpc's sqlglot, which is
what this test checks; pip's warning about the conflict is expected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SUPERSET = ["apache-superset==6.1.0", "flask-caching<2.4", "cachetools"]


def run(*args, env=None, timeout=1800) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-4000:])
    return done


@pytest.fixture
def venv(tmp_path):
    """The throw-away environment, removed afterwards (about 1 GB)."""
    yield tmp_path / "superset-venv"
    shutil.rmtree(tmp_path / "superset-venv", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.mpc
def test_superset_bar_chart_equals_the_dbapi(demo_path, tmp_path, venv):
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--no-compile", *SUPERSET)     # Python compiles what it imports
    run(python, "-m", "pip", "install", "--quiet", "-e", ROOT)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(SUPERSET_CONFIG_PATH=str(ROOT / "tests" / "superset_config.py"),
               SQLMPC_SUPERSET_DB=str(tmp_path / "superset.db"))
    run(venv / "bin" / "superset", "db", "upgrade", env=env)
    done = run(python, ROOT / "tests" / "superset_check.py", demo_path, env=env, timeout=600)
    assert "ok: Superset chart rows" in done.stdout, done.stdout
