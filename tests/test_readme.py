"""The Python examples of README.md's Interfaces section run as printed (on the small test demo)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sqlmpc.demo.generate import DEMO_VERSION

ROOT = Path(__file__).parent.parent


def interface_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Interfaces\n"):]
    section = section[:section.index("\n## ", 1)]
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", section, re.S)]


@pytest.fixture(scope="module")
def cache(demo_path, tmp_path_factory):
    """A demo cache whose default demo is the small test demo, so `connect()` and `sqlmpc://` find it."""
    cache = tmp_path_factory.mktemp("cache")
    (cache / f"demo-v{DEMO_VERSION}-5000").symlink_to(demo_path.parent, target_is_directory=True)
    return cache


def test_there_are_examples():
    assert len(interface_examples()) == 2


@pytest.mark.mpc
@pytest.mark.parametrize("index, expected", [
    (0, ["North", "input sizes", "0-17 ·", "80+"]),
    (1, ["patients", "age_band", "NaN"]),
])
def test_readme_example_runs(index, expected, cache):
    code = interface_examples()[index]
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, SQLMPC_CACHE=str(cache)))
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout, (text, done.stdout)
