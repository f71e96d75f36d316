"""Shared fixtures: a small deterministic demo federation, generated once per test session."""

from __future__ import annotations

import pytest

from sqlmpc.catalog import load_federation
from sqlmpc.demo import generate

DEMO_PERSONS = 2000


@pytest.fixture(scope="session")
def demo_path(tmp_path_factory):
    """Exact release (perturbation "none"): these tests compare ad-hoc secure results with the oracle
    exactly.  The perturbed demo (the default) is tests/test_perturbation.py's."""
    return generate(tmp_path_factory.mktemp("demo"), persons=DEMO_PERSONS, perturbation="none")


@pytest.fixture(scope="session")
def federation(demo_path):
    return load_federation(demo_path)


@pytest.fixture(scope="session")
def union_db(federation):
    from sqlmpc.local.data import open_union_database

    return open_union_database(federation)
