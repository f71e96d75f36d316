"""Documented limits and bad input: refused with a positioned sqlmpc error, never a RecursionError."""

from __future__ import annotations

import time

import pytest

import sqlmpc
from sqlmpc.errors import InvalidTextError, LimitExceededError, ProgrammingError
from sqlmpc.plan.compile import compile
from sqlmpc.sql import parse_query
from sqlmpc.sql.limits import (MAX_AGGREGATES, MAX_DEPTH, MAX_IN_ITEMS, MAX_SELECT_ITEMS, MAX_STATEMENT_CHARS,
                               MAX_TOKENS)

COUNT = "SELECT COUNT(*) FROM insurer.claims c WHERE "
SUM = "SELECT SUM({}) FROM insurer.claims c"

# Each shape builds a policy-valid query whose nesting grows with n.
SHAPES = {
    "parentheses": lambda n: COUNT + "(" * n + "c.year = 2024" + ")" * n,
    "NOT": lambda n: COUNT + "NOT " * n + "c.year = 2024",
    "AND chain": lambda n: COUNT + " AND ".join(["c.year = 2024"] * n),
    "OR chain": lambda n: COUNT + " OR ".join(["c.year = 2024"] * n),
    "nested additions": lambda n: COUNT + "(c.cost_eur + " * n + "1" + ")" * n + " > 5",
    "additions": lambda n: COUNT + " + ".join(["c.cost_eur"] * n) + " > 5",
    "unary minus": lambda n: SUM.format("- " * n + "c.cost_eur"),
    "nested CASE": lambda n: COUNT + "CASE WHEN c.year > 2020 THEN " * n + "1" + " END" * n + " = 1",
    "nested COALESCE": lambda n: COUNT + "COALESCE(" * n + "c.cost_eur" + ", 0)" * n + " > 1",
}


def deepest_accepted(shape) -> int:
    """The largest n the parser accepts for ``shape`` (it refuses n + 1 for the nesting limit)."""
    lo, hi = 1, MAX_DEPTH + 1              # shape(lo) is accepted, shape(hi + 1) is not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            parse_query(shape(mid))
            lo = mid
        except LimitExceededError:
            hi = mid - 1
    return lo


def with_frames(depth: int, fn):
    """Call ``fn`` with ``depth`` extra Python frames on the stack (as a caller deep in an app would)."""
    return fn() if depth == 0 else with_frames(depth - 1, fn)


@pytest.mark.parametrize("name", list(SHAPES))
def test_nesting_limit_is_refused_with_a_position_and_the_limit_plans(name, federation):
    shape = SHAPES[name]
    n = deepest_accepted(shape)
    assert n >= MAX_DEPTH // 3, n          # every construct costs at most 3 levels
    with pytest.raises(LimitExceededError, match=f"nests more than {MAX_DEPTH} levels") as err:
        parse_query(shape(n + 1))
    assert err.value.line == 1 and err.value.column > 1 and err.value.hint
    # Within the limit, binding and planning must not recurse too deeply, even from deep in a caller.
    sql = shape(n)
    with_frames(300, lambda: compile(sql, federation))


def test_two_thousand_ands_are_refused_not_a_recursion_error():
    with pytest.raises(LimitExceededError, match="more than 10,000 tokens"):
        parse_query(COUNT + " AND ".join(["c.year = 2024"] * 2000))
    with pytest.raises(LimitExceededError, match="nests more than") as err:
        parse_query(COUNT + " AND ".join(["c.year = 2024"] * 1000))
    assert "IN (...)" in err.value.hint


def test_statement_length_limit():
    filler = "-- " + "x" * 200 + "\n"
    sql = "SELECT COUNT(*) FROM insurer.claims c\n" + filler * (MAX_STATEMENT_CHARS // len(filler) + 1)
    with pytest.raises(LimitExceededError, match=f"more than {MAX_STATEMENT_CHARS:,}") as err:
        parse_query(sql)
    assert err.value.line > 1
    assert len(str(err.value)) < 600          # the excerpt shows the part around the caret, not the line
    parse_query(sql[:MAX_STATEMENT_CHARS])    # at the limit: fine (the cut falls inside a comment)


def test_token_limit_is_checked_before_parsing():
    sql = COUNT + "c.year IN (" + ",".join("1" for _ in range(MAX_TOKENS)) + ")"
    start = time.perf_counter()
    with pytest.raises(LimitExceededError, match=f"more than {MAX_TOKENS:,} tokens") as err:
        parse_query(sql)
    assert time.perf_counter() - start < 1          # a regular expression, not the parser
    assert err.value.column > len(COUNT)
    parse_query("SELECT COUNT(*) FROM insurer.claims c -- " + "1, " * MAX_TOKENS)    # comments do not count


def test_in_list_limit_points_at_the_first_value_too_many():
    values = ", ".join(str(2000 + i) for i in range(MAX_IN_ITEMS + 1))
    sql = COUNT + f"c.year IN ({values})"
    with pytest.raises(LimitExceededError, match=f"IN list has {MAX_IN_ITEMS + 1:,} values") as err:
        parse_query(sql)
    assert sql[err.value.column - 1:].startswith(str(2000 + MAX_IN_ITEMS))
    parse_query(COUNT + "c.year IN (" + ", ".join(str(2000 + i) for i in range(MAX_IN_ITEMS)) + ")")


def test_select_list_limit():
    items = ", ".join(f"c.year AS y{i}" for i in range(MAX_SELECT_ITEMS + 1))
    sql = f"SELECT {items} FROM insurer.claims c GROUP BY c.year"
    with pytest.raises(LimitExceededError, match=f"select list has {MAX_SELECT_ITEMS + 1} items") as err:
        parse_query(sql)
    assert sql[err.value.column - 1:].startswith(f"c.year AS y{MAX_SELECT_ITEMS}")


def test_aggregate_limit_points_at_the_first_aggregate_too_many():
    sums = " + ".join(f"SUM(c.cost_eur + {i})" for i in range(MAX_AGGREGATES + 1))
    sql = f"SELECT {sums} AS s FROM insurer.claims c"
    with pytest.raises(LimitExceededError, match=f"more than {MAX_AGGREGATES} aggregates") as err:
        parse_query(sql)
    assert sql[err.value.column - 1:].startswith(f"SUM(c.cost_eur + {MAX_AGGREGATES})")


def test_widest_statements_within_the_limits_bind_and_plan_quickly(federation):
    dims = [f"c.year AS y{i}" for i in range(MAX_SELECT_ITEMS - MAX_AGGREGATES)]
    sums = [f"SUM(c.cost_eur + {i}) AS s{i}" for i in range(MAX_AGGREGATES)]
    queries = [
        "SELECT " + ", ".join(dims + sums) + " FROM insurer.claims c GROUP BY c.year",
        "SELECT COUNT(*) FROM bureau.persons b WHERE b.region IN ("
        + ", ".join(f"'r{i}'" for i in range(MAX_IN_ITEMS)) + ")",
    ]
    for sql in queries:
        start = time.perf_counter()
        compile(sql, federation)
        assert time.perf_counter() - start < 5, sql[:60]


@pytest.mark.parametrize("text", ["'\ud800'", "'a\udfffb'", "\"\ud83d\""])
def test_a_lone_surrogate_is_refused_at_parse_time(text):
    sql = f"SELECT COUNT(*) FROM bureau.persons b WHERE b.region = {text}"
    with pytest.raises(InvalidTextError, match="lone surrogate") as err:
        parse_query(sql)
    assert isinstance(err.value, ProgrammingError)
    assert sql[err.value.column - 1] in "\ud800\udfff\ud83d"
    str(err.value).encode("utf-8")            # the message itself can be printed


def test_statement_must_be_text():
    with pytest.raises(InvalidTextError, match="not bytes"):
        parse_query(b"SELECT COUNT(*) FROM bureau.persons b")


def test_a_lone_surrogate_parameter_is_refused_by_the_driver_before_any_party(demo_path):
    with sqlmpc.connect(demo_path, oracle=True) as con:
        start = time.perf_counter()
        with pytest.raises(InvalidTextError, match="U\\+D800"):
            con.execute("SELECT COUNT(*) FROM bureau.persons b WHERE b.region = ?", ["\ud800"])
        assert time.perf_counter() - start < 5
