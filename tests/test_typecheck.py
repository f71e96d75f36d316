"""User errors that DuckDB detects are refused at bind time as positioned sqlmpc errors.

Before, each of these reached the oracle's or a party's DuckDB and came back as an
InternalError carrying DuckDB's message.
"""

from __future__ import annotations

import pytest

import sqlmpc
from sqlmpc.errors import EvaluationError, SqlSyntaxError, SqlTypeError
from sqlmpc.plan.bind import bind
from sqlmpc.plan.cells import cell_grid
from sqlmpc.sql import parse_query

C = "SELECT COUNT(*) AS n FROM insurer.claims c "
B = "SELECT COUNT(*) AS n FROM bureau.persons b "

TYPE_ERRORS = [
    (B + "WHERE b.region = 5", "b.region = 5", "Could not convert string"),
    (B + "WHERE b.region > 5", "b.region > 5", "Cannot compare"),
    (B + "WHERE b.income_decile = 'x'", "b.income_decile = 'x'", "Could not convert string 'x'"),
    (B + "WHERE YEAR(b.income_decile) = 1", "YEAR(", "year(INTEGER)"),
    (B + "WHERE EXTRACT(MONTH FROM b.region) = 1", "EXTRACT(", "date_part"),
    ("SELECT b.region + 1 AS r, COUNT(*) FROM bureau.persons b GROUP BY b.region + 1", "b.region + 1", "+(VARCHAR"),
    ("SELECT SUM(b.income_decile || 'x') AS s FROM bureau.persons b", "SUM(", "sum(VARCHAR)"),
    (C + "WHERE c.year * 2147483647 * 2147483647 > 0", "c.year * 2147483647", "Overflow"),
    (C + "WHERE CAST(c.category AS INTEGER) = 1", "CAST(c.category", "Could not convert"),
    (C + "WHERE c.year LIKE '2%'", "c.year LIKE", "~~(INTEGER"),
    (C + "WHERE c.category BETWEEN 1 AND 2", "c.category BETWEEN", "BETWEEN"),
    (C + "WHERE c.year % 0 > 1", "c.year % 0", "Division by zero"),
    (C + "WHERE c.category", "c.category", "to BOOL"),
    (C + "WHERE c.year = 2024 AND c.category AND TRUE", "c.category", "to BOOL"),
    (C + "WHERE ABS(c.category) = 1", "ABS(", "abs(VARCHAR)"),
    (C + "WHERE c.year = DATE '2020-01-01'", "c.year = DATE", "INTEGER -> DATE"),
    (C + "HAVING COUNT(*) = 'x'", "COUNT(*) = 'x'", "Could not convert string 'x'"),
]


@pytest.mark.parametrize("sql, at, fragment", TYPE_ERRORS)
def test_type_error_is_refused_at_bind_time_with_a_position(sql, at, fragment, federation):
    with pytest.raises(SqlTypeError, match="cannot be evaluated") as err:
        bind(parse_query(sql), federation, sql)
    assert fragment in str(err.value)
    assert sql[err.value.column - 1:].startswith(at), (err.value.column, sql)
    assert err.value.hint and "CAST" in err.value.hint


@pytest.mark.parametrize("sql, fragment", [
    (C + "ORDER BY 'x'", "ORDER BY a constant has no effect"),
    (C + "LIMIT 99999999999999999999", "LIMIT 99999999999999999999 is larger than"),
])
def test_constant_order_and_huge_limit_are_syntax_errors(sql, fragment, federation):
    with pytest.raises(SqlSyntaxError, match=fragment) as err:
        bind(parse_query(sql), federation, sql)
    assert err.value.column is not None


def test_through_the_driver_no_internal_error(demo_path):
    with sqlmpc.connect(demo_path, oracle=True) as con:
        for sql, _, _ in TYPE_ERRORS[:3]:
            with pytest.raises(SqlTypeError):
                con.execute(sql)
        with pytest.raises(SqlTypeError):
            con.execute(B + "WHERE b.income_decile = ?", ["x"])
        assert con.execute(B + "WHERE b.income_decile = ?", [3]).fetchall()   # well-typed: an answer


@pytest.mark.parametrize("sql", [
    C + "WHERE c.year / 0 > 1",                            # DuckDB: NULL, not an error
    C + "WHERE NOT c.year = 2020 AND c.cost_eur * 1e308 * 1e308 > 1",
    "SELECT c.category, AVG(c.cost_eur) / 0 AS x FROM insurer.claims c GROUP BY c.category",
])
def test_well_typed_queries_pass(sql, federation):
    bind(parse_query(sql), federation, sql)



def test_a_failure_only_the_data_would_show_is_refused_before_any_party_works(demo_path):
    # Three relations: the samples hold 2020..2022 only, so the sample check passes; 2024 is in the
    # data. A party's "Division by zero" would tell that some claim is of 2024: refused at bind time.
    sql = ("SELECT COUNT(*) FROM insurer.claims c JOIN bureau.persons b ON b.pid = c.pid "
           "JOIN hospital.patients p ON p.pid = c.pid WHERE c.year % (c.year - 2024) = 0")
    with sqlmpc.connect(demo_path, oracle=True) as con:
        with pytest.raises(SqlTypeError, match=r"can fail on a row: .*\(c.year - 2024\) may be 0 .*Division by zero"):
            con.execute(sql)


def test_group_by_failing_at_a_domain_value_beyond_the_samples_is_a_type_error(federation):
    # The type check samples 6 of the 10 deciles; decile 8 would make the expression fail.
    sql = ("SELECT b.income_decile % (b.income_decile - 8) AS x, COUNT(*) AS n FROM bureau.persons b "
           "GROUP BY b.income_decile % (b.income_decile - 8)")
    with pytest.raises(SqlTypeError, match="can fail on a row: .*may be 0 .*Division by zero") as err:
        bind(parse_query(sql), federation, sql)
    assert err.value.column - 1 == sql.index("b.income_decile % ")       # the first of the two


def test_an_unbound_parameter_is_checked_as_null_so_explain_works(federation):
    sql = "SELECT COUNT(*) FROM bureau.persons b WHERE b.region = ? AND b.income_decile > ?"
    bind(parse_query(sql), federation, sql)                    # EXPLAIN binds before parameters exist
    with pytest.raises(SqlTypeError, match="Cannot compare"):
        sql = "SELECT COUNT(*) FROM bureau.persons b WHERE b.region > 5 AND b.income_decile > ?"
        bind(parse_query(sql), federation, sql)
