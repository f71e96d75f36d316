"""Parameters that do not fit the query are a ParameterError (a ProgrammingError), not a generic one."""

from __future__ import annotations

import pytest

from sqlmpc.errors import ParameterError, ProgrammingError
from sqlmpc.sql import parse_query
from sqlmpc.sql.params import bind_parameters

SQL = "SELECT COUNT(*) FROM bureau.persons b WHERE b.region = ? AND b.income_decile > ?"


@pytest.mark.parametrize("params, fragment", [
    ([], "2 placeholder(s) but 0 parameter(s)"),
    (["North"], "2 placeholder(s) but 1 parameter(s)"),
    ("ab", "a sequence"),
    ({"a": 1}, "a sequence"),
    (["North", float("nan")], "NaN"),
    (["North", object()], "unsupported parameter type object"),
])
def test_parameters_that_do_not_fit(params, fragment):
    with pytest.raises(ParameterError) as err:
        bind_parameters(parse_query(SQL), params)
    assert fragment in str(err.value) and isinstance(err.value, ProgrammingError)


def test_parameters_become_literals_in_order():
    tree = bind_parameters(parse_query(SQL), ["O'Neil", 3])
    assert tree.sql("duckdb").endswith("b.region = 'O''Neil' AND b.income_decile > 3")
