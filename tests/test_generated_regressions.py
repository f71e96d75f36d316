"""Regression tests for what the differential tester (tests/differential.py) found.

Each test is the shrunk reproduction of one failure, on the demo federation: the query is
either refused before any party works with a ProgrammingError subclass, or planned.
"""

from __future__ import annotations

import pytest

from sqlmpc import errors
from sqlmpc.plan.bind import bind
from sqlmpc.plan.planner import plan_query
from sqlmpc.sql import parse_query


def plan(sql, federation):
    return plan_query(bind(parse_query(sql), federation, sql))


@pytest.mark.parametrize("sql, at", [
    ("SELECT TRUE AS flag, COUNT(*) AS n FROM insurer.claims c ORDER BY flag NULLS FIRST", "flag NULLS"),
    ("SELECT c.category, 1 AS one, COUNT(*) AS n FROM insurer.claims c GROUP BY 1 ORDER BY one", "one"),
    ("SELECT c.category, 'x' AS x, COUNT(*) AS n FROM insurer.claims c GROUP BY 1 ORDER BY 2 DESC", "2 DESC"),
])
def test_order_by_a_constant_item_by_alias_or_position_is_refused(sql, at, federation):
    """Was a DuckDB BinderException from the oracle after planning ('ORDER BY non-integer literal'); an
    integer constant was silently read as a position again and sorted the wrong column."""
    with pytest.raises(errors.SqlSyntaxError, match="names the constant") as err:
        plan(sql, federation)
    assert sql[err.value.column - 1:].startswith(at)


def test_order_by_an_aggregate_alias_still_plans(federation):
    plan("SELECT c.category, COUNT(*) AS n FROM insurer.claims c GROUP BY 1 ORDER BY n DESC, 1", federation)


@pytest.mark.parametrize("sql, at", [
    # a presence test (x IS NULL) of a sum over two parties' columns, as the two-argument aggregates
    # need: was a NotSupportedError (not a ProgrammingError) from the planner (a CASE's presence is
    # computed now: tests/test_silent_wrong_numbers.py)
    ("SELECT COVAR_SAMP(c.cost_eur + b.income_decile, c.cost_eur) AS v FROM insurer.claims c "
     "JOIN bureau.persons b ON b.pid = c.pid", "c.cost_eur + b"),
])
def test_expressions_the_engine_cannot_compute_are_refused_as_programming_errors(sql, at, federation):
    with pytest.raises(errors.UnsupportedExpressionError, match="several parties' columns") as err:
        plan(sql, federation)
    assert isinstance(err.value, errors.ProgrammingError) and err.value.hint
    assert sql[err.value.column - 1:].startswith(at)


@pytest.mark.parametrize("item, at", [
    ("ROUND(AVG(c.cost_eur), 2)", "ROUND"),
    ("COALESCE(COUNT(*), 0)", "COALESCE"),
    ("LEAST(VARIANCE(c.cost_eur), 10)", "LEAST"),
    ("CASE WHEN COUNT(*) > 5 THEN 'many' ELSE 'few' END", "CASE"),
    ("SUM(c.cost_eur) % 7", "SUM(c.cost_eur) %"),
    ("CAST(AVG(c.cost_eur) AS DOUBLE)", "CAST"),
    ("ABS(SUM(c.cost_eur) - 100)", "ABS"),
])
def test_functions_over_aggregate_outputs_are_refused_at_plan_time(item, at, federation):
    """Were an AttributeError at every party (ROUND, COALESCE, LEAST, CASE, CAST, ABS) or a
    NotSupportedError from the secure engine (%) after the parties had started."""
    sql = f"SELECT c.category, {item} AS v FROM insurer.claims c GROUP BY 1"
    with pytest.raises(errors.UnsupportedExpressionError, match="only [+] - [*] /") as err:
        plan(sql, federation)
    assert sql[err.value.column - 1:].startswith(at)


@pytest.mark.parametrize("having", ["COUNT(*) BETWEEN 1 AND 5", "ROUND(SUM(c.cost_eur)) > 3"])
def test_having_beyond_comparisons_of_arithmetic_is_refused_at_plan_time(having, federation):
    sql = f"SELECT c.category, COUNT(*) AS n FROM insurer.claims c GROUP BY 1 HAVING {having}"
    with pytest.raises(errors.UnsupportedExpressionError, match="compared"):
        plan(sql, federation)


def test_arithmetic_and_comparisons_over_aggregates_still_plan(federation):
    plan("SELECT c.category, (AVG(c.cost_eur) * 2 + SUM(c.cost_eur) / COUNT(*)) - 1 AS v, -COUNT(*) AS m "
         "FROM insurer.claims c GROUP BY 1 HAVING NOT (COUNT(*) < 3 OR SUM(c.cost_eur) / 2 >= 10.5)", federation)


NULL_CONDITIONS = [
    "SELECT COUNT(*) AS n FROM b.p t0 JOIN h.t t1 ON t1.pid = t0.pid WHERE t1.x + t0.age > 18",
    "SELECT COUNT(*) AS n FROM b.p t0 JOIN h.t t1 ON t1.pid = t0.pid WHERE NOT (t1.x + t0.age > 18)",
    "SELECT COUNT(*) AS n, AVG(t2.v) AS v FROM b.p t0 JOIN i.t2 t1 ON t1.pid = t0.pid "
    "JOIN i.c t2 ON t2.pid = t0.pid WHERE t1.x + t2.v > 18",
    "SELECT COUNT(*) AS n FROM b.p t0 LEFT JOIN i.c t1 ON t1.pid = t0.pid WHERE t1.v + t0.age > 18 OR t0.r = 'n'",
    "SELECT COUNT(*) AS n FROM b.p t0 LEFT JOIN h.t t1 ON t1.pid = t0.pid "
    "WHERE NOT (t1.x * 2 BETWEEN t0.age AND 60 AND t1.g <> 'a')",
]


@pytest.mark.mpc
def test_where_across_parties_keeps_sqls_null_semantics(tmp_path):
    """Was: a NULL measure entered MPC as 0, so t1.x + t0.age > 18 kept rows with t1.x NULL
    (secure 103 rows where SQL and the oracle count 95)."""
    import differential
    from compare import assert_same_result
    from sqlmpc.catalog import load_federation
    from sqlmpc.oracle import run_oracle
    from sqlmpc.party.embedded import EmbeddedFederation

    world = differential.make_world(tmp_path / "w", 7000)
    world.path.write_text(world.path.read_text().replace(f"min_cell_size = {world.k}", "min_cell_size = 1"))
    federation = load_federation(world.path)
    with EmbeddedFederation(federation) as secure:
        for sql in NULL_CONDITIONS:
            oracle = run_oracle(sql, federation)
            assert oracle.rows()[0][0] == world.con.execute(sql).fetchone()[0], sql    # plain SQL's count
            assert_same_result(secure.query(sql), oracle, sql)


@pytest.mark.parametrize("item", ["REGR_R2(c.cost_eur, c.year) / (VAR_SAMP(c.cost_eur) + 1)",
                                  "REGR_SLOPE(c.cost_eur, c.year) * 100"])
def test_arithmetic_over_regr_slope_and_r2_is_refused_at_plan_time(item, federation):
    """Was an AttributeError ('str' object has no attribute 'this') at every party: their value where
    x is constant (NaN, 1) is defined apart and cannot enter a formula."""
    sql = f"SELECT c.category, {item} AS v FROM insurer.claims c GROUP BY 1"
    with pytest.raises(errors.UnsupportedSqlError, match="REGR_SLOPE and REGR_R2"):
        plan(sql, federation)
    plan("SELECT c.category, REGR_SLOPE(c.cost_eur, c.year) AS s, REGR_R2(c.cost_eur, c.year) AS r "
         "FROM insurer.claims c GROUP BY 1 HAVING COUNT(*) > 1", federation)


@pytest.mark.mpc
def test_a_constant_where_applies_in_the_secure_engine(tmp_path):
    """Was: a WHERE without columns (FALSE, EXTRACT(DAY FROM DATE '2023-12-31') = 1) was dropped by the
    secure engine, which released every person's count where the oracle and SQL have none."""
    import differential
    from compare import assert_same_result
    from sqlmpc.catalog import load_federation
    from sqlmpc.oracle import run_oracle
    from sqlmpc.party.embedded import EmbeddedFederation

    world = differential.make_world(tmp_path / "w", 1054)
    federation = load_federation(world.path)
    with EmbeddedFederation(federation) as secure:
        for where in ["EXTRACT(DAY FROM DATE '2023-12-31') = 1", "FALSE", "1 = 1 AND t0.r = 'n'"]:
            sql = f"SELECT COUNT(*) AS n FROM b.p t0 JOIN h.t t1 ON t1.pid = t0.pid WHERE {where}"
            got, oracle = secure.query(sql), run_oracle(sql, federation)
            assert_same_result(got, oracle, sql)
            assert got.rows()[0][0] == (world.con.execute(sql).fetchone()[0] or None), sql


@pytest.mark.mpc
def test_having_in_parentheses_or_negated_runs_in_the_secure_engine(tmp_path):
    """Was a NotSupportedError from the secure engine ('... > 0 in an aggregate output'): sizing the
    field did not look through the parentheses and NOT of a HAVING condition."""
    import differential
    from compare import assert_same_result
    from sqlmpc.catalog import load_federation
    from sqlmpc.oracle import run_oracle
    from sqlmpc.party.embedded import EmbeddedFederation

    world = differential.make_world(tmp_path / "w", 1030)
    federation = load_federation(world.path)
    with EmbeddedFederation(federation) as secure:
        for sql in ["SELECT COUNT(t0.age) AS a0 FROM b.p t0 HAVING ((AVG(CASE WHEN t0.age < 99 THEN "
                    "(t0.age + t0.age) END) / COUNT(*)) > 0 OR AVG(t0.age) < 0)",
                    "SELECT t0.r, COUNT(*) AS n FROM b.p t0 GROUP BY 1 "
                    "HAVING NOT (COUNT(*) < 3 OR SUM(t0.age) / 2 >= 10000.5)"]:
            assert_same_result(secure.query(sql), run_oracle(sql, federation), sql)
