"""Shared fixtures: a small deterministic demo federation, generated once per test session."""

from __future__ import annotations

import pytest

from sqlmpc.catalog import load_federation
from sqlmpc.demo import generate

DEMO_PERSONS = 2000


@pytest.fixture(scope="session")
def demo_path(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo"), persons=DEMO_PERSONS)


@pytest.fixture(scope="session")
def federation(demo_path):
    return load_federation(demo_path)


@pytest.fixture(scope="session")
def union_db(federation):
    from sqlmpc.local.data import open_union_database

    return open_union_database(federation)
