"""The plaintext oracle: the same query on the union of all parties' data.

It puts every party's tables into one DuckDB and applies exactly the
disclosure rules of the secure engine (the same public cell grid, a cell
released only with at least k distinct persons, HAVING, ORDER BY, LIMIT).
It is the reference every secure result is tested against, and a clearly
labelled dry-run mode for synthetic data.  It offers no privacy whatsoever.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from sqlglot import exp

from sqlmpc.catalog import Federation
from sqlmpc.plan.bind import BoundQuery, Relation, bind
from sqlmpc.plan.cells import CellGrid, cell_grid
from sqlmpc.result import Result, aggregate_items, cell_columns, finish



def from_clause(q: BoundQuery, *, tag_parts: bool = False) -> tuple[exp.Expression, list[exp.Join]]:
    """Rebuild the query's FROM and JOINs over the real tables (``party.table``)."""

    def source(rel: Relation) -> exp.Expression:
        if not rel.is_horizontal:
            part = rel.parts[0]
            return exp.table_(part.table.name, db=part.party, alias=rel.alias)
        branches = []
        for i, part in enumerate(rel.parts):
            items = [exp.alias_(e.copy(), n) for n, e in part.columns]
            if tag_parts:
                items.append(exp.alias_(exp.Literal.number(i), "part_"))
            sel = exp.select(*items).from_(exp.table_(part.table.name, db=part.party))
            if part.where is not None:
                sel = sel.where(part.where.copy())
            branches.append(sel)
        union = branches[0]
        for b in branches[1:]:
            union = exp.union(union, b, distinct=False)
        return exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier(rel.alias)))

    rels = list(q.relations.values())
    joins = []
    for j in q.joins:
        on = exp.and_(*[exp.EQ(this=exp.column(a[1], table=a[0]), expression=exp.column(b[1], table=b[0]))
                        for a, b in j.pairs])
        joins.append(exp.Join(this=source(q.relations[j.relation]), on=on,
                              side="LEFT" if j.kind == "left" else None))
    return source(rels[0]), joins


def person_expr(q: BoundQuery) -> exp.Expression:
    """Who a row describes: the root relation's key (tagged by part when key spaces differ)."""
    root = q.root
    key = exp.column(root.key.name, table=root.alias)
    if root.is_horizontal and root.key.key_space is None:
        return exp.func("concat", exp.column("part_", table=root.alias), exp.Literal.string(":"),
                        exp.cast(key, "VARCHAR"))
    return key


def grid_table(grid: CellGrid) -> pa.Table:
    """The grid's cells, numbered by ``pos_`` in grid order."""
    cells = grid.cells()
    columns = {f"g{i}": pa.array([c[i] for c in cells]) for i in range(len(grid.groups))}
    return pa.table({**columns, "pos_": pa.array(range(len(cells)), pa.int64())})


def cell_table(q: BoundQuery, grid: CellGrid, con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The cell table of ``q`` computed in the clear (see :mod:`sqlmpc.result`)."""
    k = q.federation.policy.min_cell_size
    frm, joins = from_clause(q, tag_parts=True)
    aggs = aggregate_items(q)
    items = [exp.alias_(g.expr.copy(), f"g{i}") for i, g in enumerate(grid.groups)]
    items.append(exp.alias_(exp.Count(this=exp.Distinct(expressions=[person_expr(q)])), "persons_"))
    items.append(exp.alias_(q.having.copy() if q.having is not None else exp.true(), "having_"))
    items += [exp.alias_(a.copy(), f"a{j}") for j, a in enumerate(aggs)]
    grouped = exp.select(*items).from_(frm)
    for j in joins:
        grouped = grouped.join(j)
    if q.where:
        grouped = grouped.where(exp.and_(*[w.copy() for w in q.where]))
    if grid.groups:
        grouped = grouped.group_by(*[g.expr.copy() for g in grid.groups])

    con.register("grid_", grid_table(grid))
    ok = exp.condition(f"COALESCE(r.persons_, 0) >= {int(k)}")
    on = exp.and_(*[exp.condition(f"d.g{i} IS NOT DISTINCT FROM r.g{i}") for i in range(len(grid.groups))]) \
        if grid.groups else exp.true()
    final = exp.select(
        *[exp.column(f"g{i}", table="d") for i in range(len(grid.groups))],
        exp.alias_(ok, "ok"),
        exp.alias_(exp.If(this=ok, true=exp.column("having_", table="r")), "having"),
        *[exp.alias_(exp.If(this=ok, true=exp.column(f"a{j}", table="r")), f"a{j}") for j in range(len(aggs))],
    ).from_(exp.to_table("grid_").as_("d")).join(grouped.subquery("r"), on=on, join_type="LEFT")
    final = final.select(exp.column("pos_", table="d"))        # to keep grid order
    result = con.sql(final.sql("duckdb")).to_arrow_table().sort_by("pos_").drop_columns(["pos_"])
    return result.rename_columns(cell_columns(grid, q))


def run_oracle(sql: str, federation: Federation, con: duckdb.DuckDBPyConnection | None = None) -> Result:
    """Run ``sql`` in the clear on all parties' data with the federation's disclosure rules."""
    from sqlmpc.local.data import open_union_database

    from sqlmpc.sql import parse_query

    q = bind(parse_query(sql), federation, sql)
    grid = cell_grid(q)
    con = con or open_union_database(federation)
    return finish(q, grid, cell_table(q, grid, con))
