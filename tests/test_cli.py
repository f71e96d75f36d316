"""Command-line details: options where users put them."""

from __future__ import annotations

import subprocess
import sys

from sqlmpc.catalog import load_federation


def test_demo_takes_persons_after_the_subcommand(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "demo", "--persons", "60", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(60 persons" in done.stdout
    assert load_federation(tmp_path / "federation.toml").party("bureau") is not None
