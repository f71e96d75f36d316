"""Every saved query, run through the embedded 3-party federation, equals the oracle."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sqlmpc.oracle import run_oracle

QUERIES = sorted((Path(__file__).parent.parent / "queries").glob("*.sql"))

pytestmark = pytest.mark.mpc


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


@pytest.fixture(scope="module")
def embedded(federation):
    from sqlmpc.party.embedded import EmbeddedFederation

    with EmbeddedFederation(federation) as fed:
        yield fed


@pytest.mark.parametrize("path", QUERIES, ids=[p.stem for p in QUERIES])
def test_saved_query_equals_oracle(path, embedded, federation, union_db):
    sql = path.read_text()
    secure = embedded.query(sql)
    oracle = run_oracle(sql, federation, union_db)
    assert secure.columns == oracle.columns
    assert secure.suppressed == oracle.suppressed
    assert len(secure.rows()) == len(oracle.rows())
    for got, want in zip(secure.rows(), oracle.rows()):
        assert all(same(a, b) for a, b in zip(got, want)), (got, want)


def test_ledger_equals_the_plans_declaration(embedded, federation):
    from sqlmpc.party.node import plan_for

    sql = (Path(__file__).parent.parent / "queries" / "app_effectiveness.sql").read_text()
    result = embedded.query(sql)
    declared = [l.what for l in plan_for(federation, sql).leakage]
    opened = list(dict.fromkeys(e["what"] for e in result.leakage))
    assert opened == declared
    released = sum(not s for s in result.suppressed)
    by_what = {}
    for e in result.leakage:
        by_what[e["what"]] = by_what.get(e["what"], 0) + e["count"]
    assert by_what["cells passing k"] == len(result.suppressed)
    assert by_what["released values"] == 2 * 3 * released - released   # COUNT opens 1, SUM and AVG 2 each
