"""The plaintext oracle: the same query on the union of all parties' data.

It puts every party's tables into one DuckDB and applies exactly the
disclosure rules of the secure engine (the same public cell grid, the release
rules of :mod:`sqlmpc.plan.release` on plaintext counts, HAVING, ORDER BY, LIMIT).
It is the reference every secure result is tested against, and a clearly
labelled dry-run mode for synthetic data.  It offers no privacy whatsoever.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Federation
from sqlmpc.local.data import open_union_database
from sqlmpc.plan.query import AGGREGATES, BoundQuery, Relation
from sqlmpc.plan.cells import CellGrid, cell_grid
from sqlmpc.plan.local import value_scale
from sqlmpc.plan.release import (DominanceTest, contributor_conditions, extreme_values, has_measure,
                                 margin_lines, run_steps, secondary_suppression)
from sqlmpc.plan.compile import bind_query, compile
from sqlmpc.plan.typecheck import USER_ERRORS
from sqlmpc.sql import Query
from sqlmpc.sql.params import literal
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


def aggregates(q: BoundQuery) -> list[exp.Expression]:
    """Every aggregate of the outputs and HAVING (with its FILTER), once."""
    found: dict[str, exp.Expression] = {}
    for item in aggregate_items(q) + ([q.having] if q.having is not None else []):
        for node in item.find_all(exp.Filter, *AGGREGATES):
            if isinstance(node.parent, exp.Filter):
                continue
            found.setdefault(node.sql(), node)
    return list(found.values())


def guard_items(q: BoundQuery):
    """The release rules in plain SQL: contributor counts, (condition, value) of each dominance
    test, and for each MIN/MAX the counts of persons holding each value from the extreme end."""
    counts: dict[str, exp.Expression] = {}
    dominated: dict[str, tuple[exp.Expression, exp.Expression]] = {}
    extremes: list[list[int]] = []
    contributors: set[int] = set()

    def count(where: exp.Expression) -> int:
        counts.setdefault(where.sql(), exp.Filter(this=exp.Count(this=exp.Distinct(expressions=[person_expr(q)])),
                                                  expression=exp.Where(this=where)))
        return list(counts).index(where.sql())

    for node in aggregates(q):
        weight = node.expression.this if isinstance(node, exp.Filter) else None
        agg = node.this if isinstance(node, exp.Filter) else node
        for cond in contributor_conditions(agg, q):
            contributors.add(count(exp.and_(*[c.copy() for c in (weight, cond) if c is not None])))
        if isinstance(agg, (exp.Min, exp.Max)):
            extremes.append([count(exp.and_(*[c.copy() for c in (weight, exp.EQ(
                this=agg.this.copy(), expression=literal(v))) if c is not None])) for v in extreme_values(agg, q)])
        if q.federation.policy.dominance is None or isinstance(agg, (exp.Count, exp.Min, exp.Max)):
            continue
        args = [a for a in (agg.this, agg.args.get("expression")) if isinstance(a, exp.Expression)]
        present = [exp.Not(this=exp.Is(this=a.copy(), expression=exp.null())) for a in args]
        for x in args:
            if has_measure(x, q):
                where = exp.and_(*[c.copy() for c in [weight] + present if c is not None])
                scaled = exp.cast(exp.func("round", exp.Mul(this=exp.paren(x.copy()),
                                                            expression=exp.Literal.number(10 ** value_scale(x, q)))),
                                  "HUGEINT")
                dominated.setdefault(exp.tuple_(where, scaled).sql(), (where, scaled))
    return list(counts.values()), sorted(contributors), list(dominated.values()), extremes


def cell_table(q: BoundQuery, grid: CellGrid, con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The cell table of ``q`` computed in the clear (see :mod:`sqlmpc.result`)."""
    k = q.federation.policy.min_cell_size
    frm, joins = from_clause(q, tag_parts=True)
    aggs = aggregate_items(q)
    counts, contributors, dominated, extremes = guard_items(q)
    groups = [exp.alias_(g.expr.copy(), f"g{i}") for i, g in enumerate(grid.groups)]
    items = list(groups)
    items.append(exp.alias_(exp.Count(this=exp.Distinct(expressions=[person_expr(q)])), "persons_"))
    items += [exp.alias_(c, f"c{i}_") for i, c in enumerate(counts)]
    items.append(exp.alias_(q.having.copy() if q.having is not None else exp.true(), "having_"))
    items += [exp.alias_(a.copy(), f"a{j}") for j, a in enumerate(aggs)]

    def rows(select_items, *extra_group):
        sel = exp.select(*select_items).from_(frm.copy())
        for j in joins:
            sel = sel.join(j.copy())
        if q.where:
            sel = sel.where(exp.and_(*[w.copy() for w in q.where]))
        by = [g.expr.copy() for g in grid.groups] + list(extra_group)
        return sel.group_by(*by) if by else sel

    grouped = rows(items)
    if dominated:
        # Per person and cell: each contribution; then per cell Σ c and Σ c².
        person = rows(groups + [exp.alias_(exp.Sum(this=exp.If(this=w, true=v)), f"d{i}_")
                                for i, (w, v) in enumerate(dominated)], person_expr(q))
        sums = exp.select(*[exp.column(f"g{i}", table="p") for i in range(len(grid.groups))], *[
            item for i in range(len(dominated)) for item in (
                exp.alias_(exp.func("coalesce", exp.Sum(this=exp.column(f"d{i}_", table="p")), 0), f"s{i}_"),
                exp.alias_(exp.func("coalesce", exp.Sum(this=exp.Mul(this=exp.column(f"d{i}_", table="p"),
                                                                     expression=exp.column(f"d{i}_", table="p"))),
                                    0), f"q{i}_"))]).from_(person.subquery("p"))
        if grid.groups:
            sums = sums.group_by(*[exp.column(f"g{i}", table="p") for i in range(len(grid.groups))])
        on = exp.and_(*[exp.condition(f"s.g{i} IS NOT DISTINCT FROM r.g{i}") for i in range(len(grid.groups))]) \
            if grid.groups else exp.true()
        grouped = exp.select("r.*", *[f"s.s{i}_" for i in range(len(dominated))],
                             *[f"s.q{i}_" for i in range(len(dominated))]).from_(grouped.subquery("r")).join(
            sums.subquery("s"), on=on, join_type="LEFT")

    con.register("grid_", grid_table(grid))
    on = exp.and_(*[exp.condition(f"d.g{i} IS NOT DISTINCT FROM r.g{i}") for i in range(len(grid.groups))]) \
        if grid.groups else exp.true()
    final = exp.select(
        *[exp.column(f"g{i}", table="d") for i in range(len(grid.groups))],
        exp.alias_(exp.func("coalesce", exp.column("persons_", table="r"), 0), "persons_"),
        *[exp.alias_(exp.func("coalesce", exp.column(f"c{i}_", table="r"), 0), f"c{i}_") for i in range(len(counts))],
        *[exp.column(f"{x}{i}_", table="r") for i in range(len(dominated)) for x in "sq"],
        exp.column("having_", table="r"),
        *[exp.column(f"a{j}", table="r") for j in range(len(aggs))],
    ).from_(exp.to_table("grid_").as_("d")).join(grouped.subquery("r"), on=on, join_type="LEFT")
    final = final.select(exp.column("pos_", table="d"))        # to keep grid order
    table = con.sql(final.sql("duckdb")).to_arrow_table().sort_by("pos_")
    ok = released_cells(q, grid, table, len(counts), contributors, len(dominated), extremes)
    mask = pa.array(ok, pa.bool_())
    columns = [table.column(f"g{i}") for i in range(len(grid.groups))] + [mask]
    columns += [pc.if_else(mask, table.column(name), pa.nulls(len(ok), table.column(name).type))
                for name in ["having_"] + [f"a{j}" for j in range(len(aggs))]]
    return pa.table(columns, names=cell_columns(grid, q))


def released_cells(q: BoundQuery, grid: CellGrid, table: pa.Table, n_counts: int, contributors: list[int],
                   n_dominated: int, extremes: list[list[int]]) -> list[bool]:
    """The release rules (sqlmpc.plan.release) applied to plaintext per-cell counts and sums."""
    k = q.federation.policy.min_cell_size
    persons = table.column("persons_").to_pylist()
    held = [table.column(f"c{i}_").to_pylist() for i in range(n_counts)]
    counts = [persons] + [held[i] for i in contributors]
    primary = [all(c[cell] >= k for c in counts) and
               all(next((held[i][cell] for i in ix if held[i][cell] > 0), 0) >= k for ix in extremes)
               for cell in range(len(persons))]
    if n_dominated:
        test = DominanceTest.of(q.federation.policy.dominance)
        for i in range(n_dominated):
            s1 = [int(v or 0) for v in table.column(f"s{i}_").to_pylist()]
            s2 = [int(v or 0) for v in table.column(f"q{i}_").to_pylist()]
            primary = [p and test.passes(a, b) for p, a, b in zip(primary, s1, s2)]
    G = len(persons)

    def answer(kind, lines, released):
        if kind == "small":
            return [any(sum(c[cell] for cell in line if not released[cell]) < k for c in counts) for line in lines]
        return [min((cell for cell in line if released[cell]), key=lambda cell: persons[cell] * G + cell)
                for line in lines]

    return run_steps(secondary_suppression(primary, margin_lines(tuple(len(g.domain) for g in grid.groups))),
                     answer)


def run_oracle(query: str | Query, federation: Federation, con: duckdb.DuckDBPyConnection | None = None,
               params=None) -> Result:
    """Run a query in the clear on all parties' data with the federation's disclosure rules."""
    q = bind_query(query, federation, params)
    grid = cell_grid(q)
    con = con or open_union_database(federation)
    try:
        cells = cell_table(q, grid, con)
    except USER_ERRORS as exc:     # the type check passed on public samples; the data itself fails
        raise errors.EvaluationError(f"the query fails on the data: {str(exc).splitlines()[0]}") from exc
    return finish(q, grid, cells)


class OracleBackend:
    """The DB-API backend of a dry run: the plaintext oracle on all parties' data, no privacy at all."""

    dry_run = True
    last_stats = None

    def __init__(self, federation: Federation):
        self.federation = federation

    def query(self, query: str | Query, params=None, progress=None) -> Result:
        # Planned first, as the coordinator and every party plan it: the dry run refuses exactly what
        # the federation refuses (the planner's refusals come after binding), with the same errors.
        compile(query, self.federation, params)
        return run_oracle(query, self.federation, params=params)

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass
