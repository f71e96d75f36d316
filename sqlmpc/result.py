"""From released cells to the analyst's result table.

The secure engine and the plaintext oracle both produce a *cell table*: one
row per cell of the public grid with the group values (``g0..``), whether the
cell passed disclosure control (``ok``), its HAVING outcome (``having``) and
the released aggregate outputs (``a0..``, NULL when suppressed).  This module
turns it into the final result with DuckDB, so HAVING, ORDER BY and LIMIT mean
exactly the same in both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.plan.query import AGGREGATES, BoundQuery
from sqlmpc.plan.cells import CellGrid
from sqlmpc.plan.perturbation import PERTURBED_KEY, perturbed_columns


@dataclass
class Result:
    table: pa.Table
    suppressed: list[bool]
    leakage: list = field(default_factory=list)
    min_cell_size: int | None = None
    cells: pa.Table | None = None          # the released cell table behind the result (for audits and tests)

    @property
    def columns(self) -> list[str]:
        return self.table.column_names

    @property
    def perturbed(self) -> list[str]:
        """The columns whose values carry cell-key noise (docs/disclosure.md); [] for exact release."""
        return perturbed_columns(self.table)

    def rows(self) -> list[tuple]:
        cols = [c.to_pylist() for c in self.table.columns]
        return list(zip(*cols)) if cols else []


def has_aggregate(node: exp.Expression) -> bool:
    return any(True for _ in node.find_all(*AGGREGATES))


def aggregate_items(q: BoundQuery) -> list[exp.Expression]:
    """The select items the cell table carries as ``a0..``: those holding an aggregate."""
    return [e for _, e in q.select if has_aggregate(e)]


def cell_columns(grid: CellGrid, q: BoundQuery) -> list[str]:
    return ([f"g{i}" for i in range(len(grid.groups))] + ["ok", "having"]
            + [f"a{j}" for j in range(len(aggregate_items(q)))])


def result_types(q: BoundQuery) -> list[str]:
    """The SQL type of each output column: DuckDB describes the query over empty tables of the catalog."""
    con = duckdb.connect()
    for table in q.federation.tables:
        schema = exp.to_identifier(table.party, quoted=True).sql("duckdb")
        columns = ", ".join(f"{exp.to_identifier(c.name, quoted=True).sql('duckdb')} {c.type}" for c in table.columns)
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(f"CREATE TABLE {schema}.{exp.to_identifier(table.name, quoted=True).sql('duckdb')} ({columns})")
    return [row[1] for row in con.execute("DESCRIBE " + q.text).fetchall()]


def finish(q: BoundQuery, grid: CellGrid, cells: pa.Table) -> Result:
    """Apply the select list, HAVING, ORDER BY and LIMIT to a cell table."""
    group_cols = {g.expr.sql(): exp.column(f"g{i}", table="c") for i, g in enumerate(grid.groups)}
    agg_index = {e.sql(): j for j, e in enumerate(aggregate_items(q))}

    def to_cells(node: exp.Expression) -> exp.Expression:
        key = node.sql()
        if key in agg_index:
            return exp.column(f"a{agg_index[key]}", table="c")
        if key in group_cols:
            return group_cols[key].copy()
        if has_aggregate(node):
            raise errors.NotSupportedError(f"ORDER BY {node.sql()}: order by a selected aggregate")
        return node.transform(lambda n: group_cols[n.sql()].copy() if n.sql() in group_cols else n)

    # Every output gets the type DuckDB gives it, whoever computed the cells (engine or oracle).
    outputs = [exp.alias_(exp.cast(to_cells(e.copy()), sql_type), f"o{i}")
               for i, ((_, e), sql_type) in enumerate(zip(q.select, result_types(q)))]
    query = exp.select(*outputs, exp.alias_(exp.not_(exp.column("ok", table="c")), "suppressed_"))
    query = query.from_(exp.to_table("cells").as_("c"))
    if q.having is not None:
        query = query.where("NOT c.ok OR c.having")
    order = []
    for o in q.order_by:
        o = o.copy()
        o.set("this", to_cells(o.this))
        order.append(o)
    if order:
        query = query.order_by(*order)
    if q.limit is not None:
        query = query.limit(q.limit)
    if q.offset is not None:
        query = query.offset(q.offset)
    con = duckdb.connect()
    con.register("cells", cells)
    out = con.sql(query.sql("duckdb")).to_arrow_table()
    suppressed = out.column("suppressed_").to_pylist()
    out = out.drop_columns(["suppressed_"]).rename_columns([n for n, _ in q.select])
    noisy = set(perturbed_columns(cells))
    if noisy:       # a select item over a perturbed aggregate is perturbed
        names = [n for n, e in q.select if any(f"a{agg_index[a.sql()]}" in noisy
                                               for a in e.walk() if a.sql() in agg_index)]
        out = out.replace_schema_metadata({PERTURBED_KEY: json.dumps(names).encode()})
    return Result(out, suppressed, min_cell_size=q.federation.policy.min_cell_size, cells=cells)
