"""MPyC and sqlglot internals are relied on: their versions are pinned, and the pin is tested."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from sqlmpc.mpc import runtime

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pinned() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {r.name: r for r in map(Requirement, deps)}


@pytest.mark.parametrize("name", ["mpyc", "sqlglot"])
def test_installed_version_is_inside_a_pin_to_one_minor_release(name):
    spec = pinned()[name].specifier
    assert Version(version(name)) in spec
    lower = [Version(s.version) for s in spec if s.operator == ">="]
    upper = [Version(s.version) for s in spec if s.operator == "<"]
    assert lower and upper, f"{name} must have a lower and an upper bound: {spec}"
    # At most up to the next minor release: an upgrade is a deliberate, tested change.
    assert upper[0] <= Version(f"{lower[0].major}.{lower[0].minor + 1}")


def test_every_mpyc_internal_sqlmpc_uses_exists():
    assert runtime.missing_internals() == []


def test_a_missing_internal_is_reported():
    saved = runtime.INTERNALS
    runtime.INTERNALS = saved + (("mpyc.thresha", "no_such_helper"),)
    try:
        assert runtime.missing_internals() == ["mpyc.thresha.no_such_helper"]
    finally:
        runtime.INTERNALS = saved
