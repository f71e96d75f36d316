"""The Python examples of README.md's Interfaces section run as printed (on the small test demo), in a fresh
virtual environment that has exactly the install the README shows for them — not the test extra's packages."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from sqlmpc.demo.generate import DEMO_VERSION

ROOT = Path(__file__).parent.parent


def interface_section() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Interfaces\n"):]
    return section[:section.index("\n## ", 1)]


def shown_install(bullet: str) -> str:
    """The pip argument the README gives for a bullet: its ``pip install -e '...'``, the extra it says the
    example needs, or the quick start's plain ``.``."""
    command = re.search(r"pip install -e '(\.\[[\w,]+\])'", bullet)
    if command:
        return command.group(1)
    extras = re.findall(r"`\[(\w+)\]` extra", bullet)
    return f".[{','.join(extras)}]" if extras else "."


def interface_examples() -> list[tuple[str, str]]:
    """Each Python example with the install its bullet shows: (pip argument, code)."""
    out = []
    for bullet in re.split(r"\n\* ", interface_section()):
        for block in re.findall(r"```python\n(.*?)```", bullet, re.S):
            out.append((shown_install(bullet), textwrap.dedent(block)))
    return out


def extras(spec: str) -> set[str]:
    found = re.fullmatch(r"\.(?:\[([\w,]+)\])?", spec)
    assert found, spec
    return set(found.group(1).split(",")) if found.group(1) else set()


def test_there_are_examples_each_with_its_install():
    examples = interface_examples()
    assert [spec for spec, _ in examples] == [".[pandas]", ".[pandas,sqlalchemy]"]
    # Installed in order into one environment, so each install must include the one before it.
    assert all(extras(a) <= extras(b) for (a, _), (b, _) in zip(examples, examples[1:]))


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_package_sqlmpc_imports_is_declared():
    """An import of an undeclared package works in the developer's environment and fails after the README's
    install (as pygments once did): every third-party import must be a dependency or in an extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {normalised(re.match(r"[\w.-]+", r).group()) for r in requirements}
    imported = set()
    for path in (ROOT / "sqlmpc").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    imported -= set(sys.stdlib_module_names) | {"sqlmpc", "superset"}   # superset.py is imported by Superset only
    distributions = packages_distributions()
    undeclared = {m for m in imported if not {normalised(d) for d in distributions.get(m, [m])} & declared}
    assert "pygments" in imported and not undeclared, undeclared


@pytest.fixture(scope="module")
def cache(demo_path, tmp_path_factory):
    """A demo cache whose default demo is the small test demo, so `connect()` and `sqlmpc://` find it."""
    cache = tmp_path_factory.mktemp("cache")
    (cache / f"demo-v{DEMO_VERSION}-5000").symlink_to(demo_path.parent, target_is_directory=True)
    return cache


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory):
    """A new virtual environment with nothing installed yet."""
    venv = tmp_path_factory.mktemp("readme-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    yield venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)


def importable(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, timeout=120).returncode == 0


@pytest.mark.slow
@pytest.mark.mpc
def test_readme_examples_run_after_exactly_the_install_shown(fresh_python, cache):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["SQLMPC_CACHE"] = str(cache)
    for spec, code in interface_examples():
        done = subprocess.run([str(fresh_python), "-m", "pip", "install", "--quiet", "-e", spec], cwd=ROOT,
                              capture_output=True, text=True, timeout=1200, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        # Exactly that install: what the extras add is there, what the next example's extra adds is not.
        assert importable(fresh_python, "sqlmpc") and not importable(fresh_python, "pytest")
        assert importable(fresh_python, "sqlalchemy") == ("sqlalchemy" in extras(spec))
        done = subprocess.run([str(fresh_python), "-c", code], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.returncode == 0, (spec, done.stderr)
        expected = {".[pandas]": ["North", "input sizes", "0-17 ·", "80+"],
                    ".[pandas,sqlalchemy]": ["patients", "age_band", "NaN"]}[spec]
        for text in expected:
            assert text in done.stdout, (spec, text, done.stdout)
