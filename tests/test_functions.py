"""Every function the dialect accepts runs in a party's DuckDB as the planner renders it.

For each scalar function and aggregate of the grammar (sqlmpc.sql.parser's registry) a query is
planned and each party's local SQL is run on the demo data in that party's own DuckDB.  A function
DuckDB does not have (WIDTH_BUCKET) must be translated by the parser, never passed through.
"""

from __future__ import annotations

import duckdb
import pytest

from sqlmpc.errors import SqlSyntaxError, UnsupportedSqlError
from sqlmpc.local.data import open_party_database
from sqlmpc.plan.bind import bind
from sqlmpc.plan.cells import cell_grid
from sqlmpc.plan.compile import compile
from sqlmpc.sql import parse_query
from sqlmpc.sql.parser import AGGREGATE_NAMES, SCALAR_NAMES

WHERE = "SELECT COUNT(*) AS n FROM insurer.claims c WHERE "
AGG = "SELECT {} AS v FROM insurer.claims c JOIN hospital.app_usage u ON u.pid = c.pid"

FUNCTION_QUERIES = {
    "ABS": WHERE + "ABS(c.cost_eur - 100) < 50",
    "ROUND": WHERE + "ROUND(c.cost_eur, 1) > 10 AND ROUND(c.cost_eur) < 1000",
    "COALESCE": WHERE + "COALESCE(c.cost_eur, 0) > 10",
    "LEAST": WHERE + "LEAST(c.cost_eur, 100) = 100",
    "GREATEST": WHERE + "GREATEST(c.cost_eur, 100, 5) = 100",
    "WIDTH_BUCKET": "SELECT WIDTH_BUCKET(c.cost_eur, 0, 1000, 4) AS b, COUNT(*) AS n "
                    "FROM insurer.claims c GROUP BY 1",
    "YEAR": WHERE + "c.year = YEAR(DATE '2024-05-01')",
    "MONTH": WHERE + "c.year - 2019 = MONTH(DATE '2024-05-01')",
    "DATE_PART": WHERE + "c.year = DATE_PART('year', DATE '2024-05-01')",
    "EXTRACT": WHERE + "c.year = EXTRACT(YEAR FROM DATE '2024-05-01') + EXTRACT(DAY FROM DATE '2024-05-01') - 1",
    "CAST": WHERE + "CAST(c.cost_eur AS INTEGER) > 10 AND CAST(c.year AS VARCHAR) = '2024'",
    "||": WHERE + "c.category || '-x' = 'gp-x'",
    "LIKE": WHERE + "c.category LIKE 'g%' AND c.category NOT LIKE '%z'",
    "COUNT": AGG.format("COUNT(c.cost_eur) + COUNT(DISTINCT c.pid) + COUNT(*)"),
    "SUM": AGG.format("SUM(c.cost_eur)"),
    "AVG": AGG.format("AVG(c.cost_eur)"),
    "MIN": "SELECT MIN(c.year) AS v FROM insurer.claims c",      # one party alone: MIN/MAX need no join
    "MAX": "SELECT MAX(c.year) AS v FROM insurer.claims c",
    **{name: AGG.format(f"{name}(c.cost_eur)")
       for name in ("STDDEV", "STDDEV_SAMP", "STDDEV_POP", "VARIANCE", "VAR_SAMP", "VAR_POP")},
    **{name: AGG.format(f"{name}(c.cost_eur, u.sessions)")
       for name in ("CORR", "COVAR_POP", "COVAR_SAMP", "REGR_SLOPE", "REGR_INTERCEPT", "REGR_R2")},
}


def test_every_function_of_the_grammar_is_covered():
    assert set(SCALAR_NAMES) | set(AGGREGATE_NAMES) <= set(FUNCTION_QUERIES)


@pytest.fixture(scope="module")
def party_databases(federation):
    return {p: open_party_database(federation, p) for p in federation.party_names}


@pytest.mark.parametrize("name", list(FUNCTION_QUERIES))
def test_function_runs_in_each_partys_duckdb(name, federation, party_databases):
    sql = FUNCTION_QUERIES[name]
    plan = compile(sql, federation)
    assert plan.parts
    for part in plan.parts:
        try:
            party_databases[part.party].execute(part.sql).fetchall()
        except duckdb.Error as exc:           # pragma: no cover - the failure is the message
            pytest.fail(f"{name}: {part.party}'s local SQL fails in DuckDB: {exc}\n{part.sql}")
    assert "WIDTH_BUCKET" not in " ".join(p.sql.upper() for p in plan.parts)


# ---------------------------------------------------------------- WIDTH_BUCKET


def reference_width_bucket(x, lo, hi, n):
    """PostgreSQL's definition."""
    if x is None:
        return None
    if x < lo:
        return 0
    if x >= hi:
        return n + 1
    return int((x - lo) * n // (hi - lo)) + 1


@pytest.mark.parametrize("lo, hi, n", [(0, 1000, 4), (-1.5, 10, 3), (0, 1, 1), (10, 20, 7)])
def test_width_bucket_translation_means_what_postgresql_means(lo, hi, n):
    case = parse_query(f"SELECT WIDTH_BUCKET(x, {lo}, {hi}, {n}) FROM h.t").expressions[0]
    values = [None, lo - 1, lo, hi, hi + 1, *(lo + (hi - lo) * i / 13 for i in range(13))]
    con = duckdb.connect()
    for x in values:
        literal = "NULL::DOUBLE" if x is None else repr(float(x))
        got = con.execute(f"SELECT {case.sql('duckdb').replace('x', literal)}").fetchone()[0]
        assert got == reference_width_bucket(x, lo, hi, n), (x, lo, hi, n)


def test_width_bucket_groups_are_its_buckets(federation):
    sql = FUNCTION_QUERIES["WIDTH_BUCKET"]
    grid = cell_grid(bind(parse_query(sql), federation, sql))
    assert grid.groups[0].domain == (0, 1, 2, 3, 4, 5)    # no NULL bucket: cost_eur is NOT NULL


@pytest.mark.parametrize("call, error, fragment", [
    ("WIDTH_BUCKET(c.cost_eur, c.cost_eur, 10, 2)", UnsupportedSqlError, "literal numbers"),
    ("WIDTH_BUCKET(c.cost_eur, 0, 10, 0)", SqlSyntaxError, "from 1 to 100"),
    ("WIDTH_BUCKET(c.cost_eur, 0, 10, 2.5)", SqlSyntaxError, "whole number"),
    ("WIDTH_BUCKET(c.cost_eur, 0, 10, 101)", SqlSyntaxError, "from 1 to 100"),
    ("WIDTH_BUCKET(c.cost_eur, 10, 0, 2)", SqlSyntaxError, "must be below"),
    ("WIDTH_BUCKET(c.cost_eur, 0, 10)", SqlSyntaxError, "takes 4 arguments"),
])
def test_width_bucket_refusals(call, error, fragment):
    sql = f"SELECT {call} AS b, COUNT(*) FROM insurer.claims c GROUP BY 1"
    with pytest.raises(error, match=fragment) as err:
        parse_query(sql)
    assert err.value.column == 8 and err.value.hint
