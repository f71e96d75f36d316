"""The fuzz test (tests/fuzz.py) in CI: every input ends in a result or an sqlmpc error within 10 s.

A fixed seed and a few hundred inputs at the driver's depth up to planning; a sample of the
generated ones also through the plaintext oracle.  ``python tests/fuzz.py --n 1000`` is the
bench mode.
"""

from __future__ import annotations

import collections

import pytest

import fuzz
from sqlmpc import errors

CI_INPUTS = 220
CI_ORACLE = 8
SEED = 13


@pytest.fixture(scope="module")
def outcomes(federation, union_db):
    failures: list[str] = []
    got = fuzz.run(federation, CI_INPUTS, SEED, CI_ORACLE, union_db, report=failures.append)
    return got, failures


def test_every_input_ends_in_a_result_or_an_sqlmpc_error_within_10_s(outcomes):
    got, failures = outcomes
    assert len(got) >= 200
    assert not failures, "\n".join(failures)
    assert max(o.seconds for o in got) < fuzz.TIME_LIMIT


def test_the_inputs_reach_every_stage(outcomes):
    got, _ = outcomes
    kinds = collections.Counter(o.kind for o in got)
    assert {"edge", "tokens", "mutation", "generated", "generated+oracle"} <= set(kinds)
    results = collections.Counter(o.result for o in got)
    assert results["ok"] >= 30                                     # planned (and run by the oracle)
    assert results["SqlSyntaxError"] >= 30                         # refused by the parser
    for name in ("LimitExceededError", "InvalidTextError", "EmptyGridError"):
        assert results[name] >= 1, name
    assert all(issubclass(getattr(errors, r), errors.Error) for r in results if r not in ("ok",)
               and not r.startswith("FAIL"))


def test_a_failure_is_reported_with_a_shrunk_reproduction(federation, monkeypatch):
    def broken(sql, federation, params=None, *, oracle_con=None):
        if "year" in sql:
            raise KeyError("boom")
        return "ok"

    monkeypatch.setattr(fuzz, "run_input", broken)
    outcome = fuzz.judge("SELECT COUNT(*) FROM insurer.claims c WHERE c.year = 2024", None, "edge", federation)
    assert outcome.failed and outcome.result.startswith("FAIL: KeyError")
    assert fuzz.shrink(outcome.sql, None, federation, outcome.result) == "year"


def test_left_joined_dimension_narrowed_by_where_plans(federation):
    """Was a planner crash (ValueError): NULL, the unmatched rows' value, is not in the narrowed domain."""
    sql = ("SELECT t1.age_band, COUNT(*) AS n FROM hospital.patients t0 LEFT JOIN bureau.persons t1 "
           "ON t1.pid = t0.pid WHERE t1.age_band = '50-64' GROUP BY 1")
    assert fuzz.run_input(sql, federation) == "ok"
