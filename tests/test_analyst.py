"""The analyst-SQL differential tester (tests/analyst.py) in CI: 500 generated queries, fixed seed.

Queries as analysts write them over the demo tables (expressions of one and several columns
inside every aggregate, CASE with and without ELSE, LEFT JOINs with binning of the joined measure,
WHERE narrowing a non-root party, FILTER and CASE across parties, several parties' GROUP BY,
HAVING, ORDER BY, parameters).  Every answered query equals plain DuckDB on the raw tables plus
the release rules, cell by cell with suppression, through the oracle; a share also through one
embedded 3-party federation.  A refused query is a ProgrammingError subclass before any party
works.  ``python bench/analyst.py`` is the bench mode (BENCHMARKS.md).
"""

from __future__ import annotations

import pytest

import analyst
from sqlmpc import errors

pytestmark = pytest.mark.mpc

CI_QUERIES = 500
CI_SECURE_SHARE = 0.04
PERSONS = 500
SEED = 11


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    failures: list[str] = []
    cases = analyst.Runner(tmp_path_factory.mktemp("analyst"), SEED, PERSONS, report=failures.append).run(
        CI_QUERIES, CI_SECURE_SHARE)
    print(analyst.summary(cases))          # shown with pytest -s
    return cases, failures


def test_every_analyst_query_equals_plain_duckdb_or_is_refused_before_any_party_works(run):
    cases, failures = run
    assert len(cases) == CI_QUERIES
    assert not failures, "\n\n".join(failures)
    assert not any(c.kind == "mismatch" for c in cases)


def test_the_queries_reach_the_secure_engine_and_are_mostly_answered(run):
    cases, _ = run
    counts = analyst.summary(cases)
    assert counts["answered"] >= CI_QUERIES // 2
    assert counts["answered (also secure)"] >= 8
    for name in counts["refused"]:
        assert issubclass(getattr(errors, name), errors.ProgrammingError), name


def test_the_generator_writes_what_analysts_write():
    import random

    gen = analyst.AnalystGenerator(random.Random(SEED))
    sqls = [gen.query().render()[0] for _ in range(400)]
    for pattern in ["LEFT JOIN", "WIDTH_BUCKET(", " END) FILTER", "ELSE NULL END", "FILTER (WHERE",
                    " + 1)", "VAR_POP(", "STDDEV_SAMP(", "CORR(", "REGR_SLOPE(", "COUNT((", "HAVING", "ORDER BY",
                    "?"]:
        assert any(pattern in s for s in sqls), pattern
    assert any("CASE WHEN" in s and "ELSE" not in s.split("CASE WHEN", 1)[1].split("END", 1)[0] for s in sqls)
