"""The function registry (sqlmpc/sql/functions.py) is the one place a function is declared.

GREATEST and LEAST are declared there with a secure implementation, and nowhere else: they work
over one party's columns (in its DuckDB) and across parties (in MPC), equal to the oracle.
"""

from __future__ import annotations

import pytest

from compare import assert_same_result
from sqlmpc.errors import SqlSyntaxError, UnsupportedExpressionError
from sqlmpc.oracle import run_oracle
from sqlmpc.party.embedded import EmbeddedFederation
from sqlmpc.plan.compile import compile
from sqlmpc.sql import parse_query
from sqlmpc.sql.functions import AGGREGATES, SCALARS, scalar_of

ACROSS = ("SELECT COUNT(*) AS n, COUNT(DISTINCT u.pid) AS persons FROM hospital.app_usage u "
          "JOIN bureau.persons b ON b.pid = u.pid WHERE {}")
ALONE = "SELECT c.category, COUNT(*) AS n FROM insurer.claims c WHERE {} GROUP BY c.category ORDER BY c.category"


def test_each_name_is_declared_once_and_scalars_know_their_node():
    assert not set(SCALARS) & set(AGGREGATES)
    for f in SCALARS.values():
        if f.node is not None:
            example = parse_query(f"SELECT {f.example} FROM h.t").expressions[0]
            assert scalar_of(example) is f, f.name


@pytest.mark.parametrize("sql, message", [
    ("SELECT GREATEST() FROM h.t", "GREATEST needs at least one argument"),
    ("SELECT ABS(1, 2) FROM h.t", "ABS takes 1 argument, got 2"),
    ("SELECT ROUND(1, 2, 3) FROM h.t", "ROUND takes 1 or 2 arguments, got 3"),
])
def test_arity_comes_from_the_registry(sql, message):
    with pytest.raises(SqlSyntaxError, match=message):
        parse_query(sql)


@pytest.mark.mpc
@pytest.mark.parametrize("condition", [
    "GREATEST(b.income_decile, u.active_weeks / 4) >= 6",
    "LEAST(b.income_decile, u.sessions, 9) < 5",
    "GREATEST(b.income_decile - u.active_weeks, 0) = 0",
])
def test_greatest_and_least_across_parties_equal_the_oracle(condition, federation, union_db):
    sql = ACROSS.format(condition)
    plan = compile(sql, federation)
    assert plan.mode == "join" and plan.row_filter is not None       # computed in MPC, not by one party
    with EmbeddedFederation(federation) as parties:
        secure = parties.query(sql)
    expected = run_oracle(sql, federation, union_db)
    assert expected.rows()[0][0] is not None                         # released: the comparison means something
    assert_same_result(secure, expected, sql)


@pytest.mark.parametrize("condition", ["GREATEST(c.cost_eur, 100) > 150", "LEAST(c.cost_eur, 500, c.year) < 400"])
def test_greatest_and_least_over_one_partys_columns_run_in_its_duckdb(condition, federation, union_db):
    sql = ALONE.format(condition)
    plan = compile(sql, federation)
    assert plan.mode == "local" and condition.split("(")[0] in plan.parts[0].sql.upper()
    assert run_oracle(sql, federation, union_db).rows()


def test_a_nullable_argument_across_parties_is_refused_with_a_hint(federation):
    sql = ("SELECT COUNT(*) FROM bureau.persons b LEFT JOIN hospital.app_usage u ON u.pid = b.pid "
           "WHERE GREATEST(b.income_decile, u.sessions) > 5")
    with pytest.raises(UnsupportedExpressionError, match="u.sessions may be NULL") as err:
        compile(sql, federation)
    assert "COALESCE(u.sessions, 0)" in str(err.value)
