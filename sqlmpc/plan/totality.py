"""A query that binds cannot fail on a row: every operation that could fail is decided now.

DuckDB raises on a cast that does not fit (``CAST(x AS SMALLINT)``), an integer overflow, a
remainder by zero or a text that is no number (``postcode = 1234``).  Raised at a party, the
error itself would say something about one row — that a value lies in a band, that a text is
not numeric — whatever its message, and a CASE that is false on the type check's sample rows
would let it pass to the parties.  So each such operation is evaluated here over *every* value
its operands may take by what is public: the declared range of a measure (interval arithmetic,
CASE arms joined), the domain of a dimension, the whole range of a type where nothing is
declared, and probes (``'x'``) for a text without public values.  An operation that fails on
any of them is refused, with its position and the range at fault; what passes cannot fail on
data that fits the catalog (the parties check their data against it when they read it).
"""

from __future__ import annotations

import itertools
import math

import duckdb
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.plan.local import interval
from sqlmpc.plan.query import BoundQuery
from sqlmpc.plan.typecheck import USER_ERRORS
from sqlmpc.sql.params import literal
from sqlmpc.sql.positions import node_position

# Operations DuckDB can raise on for some operand values (conditions, CASE and aggregates cannot).
FALLIBLE = (exp.Cast, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.Abs, exp.Round,
            exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between,
            exp.Coalesce, exp.Least, exp.Greatest)

# The values of a type where nothing narrower is public.
_INTEGER_RANGES = {"TINYINT": 7, "SMALLINT": 15, "INTEGER": 31, "BIGINT": 63, "HUGEINT": 127}
_DATE_PARTS = {"YEAR": (-290308, 294247), "MONTH": (1, 12), "DAY": (1, 31)}
TEXT_PROBES = ("x", "", "1e999", "-0", "2024-13-45")   # a conversion of text to anything else fails on one
MAX_CASES = 4096                                       # operand combinations evaluated per operation


def check_total(q: BoundQuery, con: duckdb.DuckDBPyConnection, source: exp.Select) -> None:
    """Raise SqlTypeError for the first operation of ``q`` that could fail on some row.

    ``con`` holds the type check's sample tables and ``source`` selects from them (for the
    operands' DuckDB types)."""
    trees = [e for _, e in q.select] + list(q.where) + list(q.group_by) + [o.this for o in q.order_by]
    trees += [q.having] if q.having is not None else []
    for tree in trees:
        for node in reversed(list(tree.find_all(*FALLIBLE, bfs=False))):   # inner operations first
            operands = _operands(node)
            if not node.find(exp.Column) or any(o.find(exp.AggFunc, exp.Placeholder) for o in operands):
                continue        # a constant (checked already), over released aggregates, or a parameter to come
            types = con.execute(source.copy().select(*[exp.func("typeof", o.copy()) for o in operands])
                                .limit(1).sql("duckdb")).fetchone()
            _check(q, node, operands, [_values(q, o, t) for o, t in zip(operands, types)], types, con)


def _operands(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Cast):
        return [node.this]
    if isinstance(node, exp.Round):
        return [node.this]          # its digits are a literal
    return [a for a in node.iter_expressions() if not isinstance(a, exp.DataType)]


def _values(q: BoundQuery, node: exp.Expression, type_: str) -> list:
    """Every value ``node`` may take, or values at its extremes, as far as anything is public."""
    node = node.unnest()
    if isinstance(node, exp.Null) or type_ == '"NULL"':
        return [None]
    if isinstance(node, exp.Literal):
        return [node]
    if isinstance(node, exp.Column):
        column = q.column_of(node)
        if column.domain:
            return list(column.domain)
    base = type_.split("(")[0]
    if type_ == "BOOLEAN":
        return [True, False]
    if base in ("VARCHAR", "TEXT"):
        return list(TEXT_PROBES)
    numeric = base in _INTEGER_RANGES or base in ("DOUBLE", "FLOAT", "REAL", "DECIMAL")
    if not numeric:
        return []           # dates: no operation here fails on them
    try:
        lo, hi, _ = _interval(node, q)
    except errors.UnsupportedExpressionError:
        lo, hi = _type_range(type_)
    if base in _INTEGER_RANGES:
        lo, hi = int(lo), int(hi)
    return sorted({lo, hi} | ({0} if lo <= 0 <= hi else set()))


def _interval(node: exp.Expression, q: BoundQuery):
    if isinstance(node, (exp.Year, exp.Month, exp.Day)):
        part = type(node).__name__.upper()
    elif isinstance(node, exp.Extract) or (isinstance(node, exp.Anonymous) and node.name.upper() == "DATE_PART"):
        part = (node.this if isinstance(node, exp.Extract) else node.expressions[0]).name.upper()
    else:
        return interval(node, q)
    if part not in _DATE_PARTS:
        raise errors.UnsupportedExpressionError(f"no public range for {part}")
    return (*_DATE_PARTS[part], 0)


def _type_range(type_: str) -> tuple:
    base = type_.split("(")[0]
    if base in _INTEGER_RANGES:
        bits = _INTEGER_RANGES[base]
        return -2**bits, 2**bits - 1
    if base == "DECIMAL" and "(" in type_:
        width, scale = (int(p) for p in type_.split("(")[1].rstrip(")").split(","))
        top = float(10 ** (width - scale)) - 10.0 ** -scale
        return -top, top
    return -1.7976931348623157e308, 1.7976931348623157e308


def _check(q, node, operands, values, types, con) -> None:
    if any(not v for v in values):
        return
    cases = list(itertools.islice(itertools.product(*values), MAX_CASES))
    table = exp.values([exp.tuple_(*(_typed(v, t) for v, t in zip(case, types))) for case in cases], "cases",
                       [f"o{i}" for i in range(len(operands))])
    try:                                    # usually every case is fine: all at once
        con.execute(exp.select(_probe(node, [exp.column(f"o{i}", "cases") for i in range(len(operands))]))
                    .from_(table).sql("duckdb")).fetchall()
        return
    except USER_ERRORS:
        pass
    for case in cases:                      # the case at fault, for the message
        try:
            con.execute(exp.select(_probe(node, [_typed(v, t) for v, t in zip(case, types)])).sql("duckdb")).fetchall()
        except USER_ERRORS as exc:
            raise _error(q, node, operands, values, case, exc) from None


def _probe(node: exp.Expression, replacements: list[exp.Expression]) -> exp.Expression:
    """``node`` with its operands replaced."""
    probe = node.copy()
    for operand, replacement in zip(_operands(probe), replacements):
        operand.replace(replacement)
    return probe


def _typed(value, type_: str) -> exp.Expression:
    if isinstance(value, exp.Expression):
        return value.copy()
    if value is None:
        return exp.Null()
    number = isinstance(value, float) and not math.isfinite(value)
    return exp.cast(exp.Literal.string(str(value)) if number else literal(value),
                    exp.DataType.build(type_, dialect="duckdb"))


def _short(node: exp.Expression, width: int = 60) -> str:
    text = node.sql("duckdb")
    return text if len(text) <= width else text[:width - 3] + "..."


def _error(q, node, operands, values, case, exc: duckdb.Error) -> errors.SqlTypeError:
    described = []
    for operand, vals, value in zip(operands, values, case):
        if isinstance(operand.unnest(), exp.Literal):
            continue
        shown = value.sql("duckdb") if isinstance(value, exp.Expression) else repr(value)
        if vals == list(TEXT_PROBES):
            described.append(f"{_short(operand)} is text without public values (e.g. {shown})")
        else:
            low, high = vals[0], vals[-1]
            described.append(f"{_short(operand)} may be {shown} (its public values span {low!r} .. {high!r})")
    reason = str(exc).splitlines()[0].partition(": ")[2] or type(exc).__name__
    return errors.SqlTypeError(
        f"{_short(node)} can fail on a row: {'; '.join(described)}, and then {reason}; a query must not "
        f"fail on one person's value", sql=q.sql, **node_position(node),
        hint="cast to a type that holds every declared value (BIGINT, DOUBLE), compare text with quoted text, "
             "and keep divisors of % away from zero")
