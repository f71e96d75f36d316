"""Type checking a bound query with DuckDB, on public sample rows, before any party works.

Every party runs its share in DuckDB, and the oracle runs the whole query there; an
expression DuckDB cannot evaluate (``SUM`` of text, ``YEAR`` of a number, ``region = 5``)
would otherwise fail late, at a party, as a DuckDB message.  Here each expression of the
query is evaluated over a few rows made of *public* catalog values only (each dimension's
domain, each measure's declared bounds), one small table per relation, and a DuckDB error
becomes a :class:`~sqlmpc.errors.SqlTypeError` that points at the expression.
"""

from __future__ import annotations

import os
import threading

import duckdb
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Column, Role
from sqlmpc.plan.query import BoundQuery
from sqlmpc.sql.params import literal
from sqlmpc.sql.positions import node_position

SAMPLE_ROWS = 6          # rows per relation (fewer when the query has many relations)

# DuckDB's errors that describe the query, not sqlmpc: the user can fix them.  (A missing
# function or table would be sqlmpc's own bug: every function of the dialect exists in DuckDB.)
USER_ERRORS = (duckdb.BinderException, duckdb.ConversionException,
               duckdb.OutOfRangeException, duckdb.InvalidInputException)


_scratch = threading.local()


def scratch() -> duckdb.DuckDBPyConnection:
    """This thread's empty in-memory DuckDB, for checks and constant folding (connecting anew costs
    ~60 ms; DuckDB's default connection is one per process and refuses a second thread while busy).
    Keyed by process id too, so that a forked child never uses its parent's."""
    if getattr(_scratch, "pid", None) != os.getpid():
        _scratch.con, _scratch.pid = duckdb.connect(), os.getpid()
    return _scratch.con


def _sample(column: Column, i: int):
    """The i-th public sample value of a column (NULL where nothing about it is public)."""
    if column.role is Role.DIMENSION and column.domain:
        return column.domain[i % len(column.domain)]
    if column.role is Role.MEASURE and column.range is not None:
        lo, hi = column.range
        return (lo, hi, (lo + hi) / 2 if column.type.upper() in ("DOUBLE", "FLOAT", "REAL") else lo)[i % 3]
    if column.role is Role.KEY:
        return f"k{i}" if column.type.upper() in ("VARCHAR", "TEXT") else i
    return None


def _sample_tables(q: BoundQuery, con: duckdb.DuckDBPyConnection) -> None:
    rows = max(2, SAMPLE_ROWS // max(1, len(q.relations) - 1))
    for alias, relation in q.relations.items():
        name = exp.to_identifier(alias, quoted=True).sql("duckdb")
        columns = ", ".join(f"{exp.to_identifier(c.name, quoted=True).sql('duckdb')} {c.type}"
                            for c in relation.columns)
        con.execute(f"CREATE TEMP TABLE {name} ({columns})")
        values = ", ".join(
            "(" + ", ".join(f"CAST({literal(_sample(c, i)).sql('duckdb')} AS {c.type})" for c in relation.columns)
            + ")" for i in range(rows))
        con.execute(f"INSERT INTO {name} VALUES {values}")


def _copy(node: exp.Expression) -> exp.Expression:
    """A copy to evaluate: a parameter not bound yet (EXPLAIN ... ?) is checked as a NULL of any type."""
    return node.copy().transform(lambda n: exp.Null() if isinstance(n, exp.Placeholder) else n)


def _checks(q: BoundQuery, source: exp.Select) -> list[tuple[exp.Expression, exp.Select]]:
    """(expression, a query that evaluates it where the query does) for every expression, in reading order."""
    def grouped(query: exp.Select) -> exp.Select:
        return query.group_by(*[_copy(g) for g in q.group_by]) if q.group_by else query

    checks = [(e, grouped(source.copy().select(_copy(e)))) for _, e in q.select]
    checks += [(w, source.copy().select("1").where(_copy(w))) for w in q.where]      # a condition: BOOLEAN
    checks += [(g, source.copy().select(_copy(g))) for g in q.group_by]
    if q.having is not None:
        checks.append((q.having, grouped(source.copy().select("1")).having(_copy(q.having))))
    checks += [(o.this, grouped(source.copy().select(_copy(o.this)))) for o in q.order_by]
    return checks


def _combined(q: BoundQuery, source: exp.Select) -> list[exp.Select]:
    """Two queries that evaluate every expression of ``q`` on every sample row (no filter can
    skip one): its rows' expressions, and its outputs; conditions are cast to BOOLEAN as WHERE does."""
    def condition(node: exp.Expression) -> exp.Expression:
        return exp.cast(_copy(node), "BOOLEAN")

    rows = source.copy().select(*[_copy(g) for g in q.group_by], *[condition(w) for w in q.where], "1")
    outputs = source.copy().select(*[_copy(e) for _, e in q.select], *[_copy(o.this) for o in q.order_by],
                                   *([condition(q.having)] if q.having is not None else []))
    if q.group_by:
        outputs = outputs.group_by(*[_copy(g) for g in q.group_by])
    return [rows, outputs]


def check_types(q: BoundQuery, then=None) -> None:
    """Raise SqlTypeError for the first expression DuckDB cannot evaluate on public sample rows;
    then call ``then(q, con, source)`` over the same sample tables (the totality check)."""
    con = scratch().cursor()        # its own connection: TEMP tables are private to it
    try:
        _sample_tables(q, con)
        tables = [exp.Table(this=exp.to_identifier(a, quoted=True)) for a in q.relations]
        source = exp.select().from_(tables[0])
        for table in tables[1:]:
            source = source.join(table, join_type="CROSS")
        checks = _checks(q, source)
        try:                                   # usually all is well: check everything at once
            for query in _combined(q, source):
                con.execute(query.sql("duckdb")).fetchall()
        except USER_ERRORS:
            for node, query in checks:         # find the expression at fault
                try:
                    con.execute(query.sql("duckdb")).fetchall()
                except USER_ERRORS as exc:
                    raise _type_error(q, node, exc) from None
        if then is not None:
            then(q, con, source)
    finally:
        con.close()


def _type_error(q: BoundQuery, node: exp.Expression, exc: duckdb.Error) -> errors.SqlTypeError:
    first = str(exc).splitlines()[0]
    kind, _, message = first.partition(": ")
    return errors.SqlTypeError(
        f"{node.sql('duckdb')} cannot be evaluated: {message or first}", sql=q.sql, **node_position(node),
        hint="compare and compute with values of the column's type (DESCRIBE party.table lists them); "
             "convert with CAST(x AS type)")
