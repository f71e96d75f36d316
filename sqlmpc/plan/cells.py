"""The public cell grid of a GROUP BY: every combination of the groups' domains.

Dimensions have public domains, so the set of result cells is known before
any data is touched.  Both the secure engine and the plaintext oracle use this
one grid, so a cell is a cell in both, empty or not.  A WHERE condition on a
group's own dimension columns narrows that group's domain (it is public
information); nothing else does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import duckdb
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Role
from sqlmpc.plan.bind import BINNING, BoundQuery
from sqlmpc.sql.params import literal

MAX_CELLS = 10_000


@dataclass(frozen=True)
class Group:
    """One GROUP BY expression: the relation that computes it and its public domain."""

    expr: exp.Expression
    relation: str
    domain: tuple

    @property
    def name(self) -> str:
        return self.expr.sql("duckdb")


@dataclass(frozen=True)
class CellGrid:
    groups: tuple[Group, ...]

    @property
    def size(self) -> int:
        n = 1
        for g in self.groups:
            n *= len(g.domain)
        return n

    def cells(self) -> list[tuple]:
        """All cells in grid order (row-major in GROUP BY order)."""
        return list(itertools.product(*(g.domain for g in self.groups)))


def _literal_outputs(node: exp.Expression) -> tuple:
    """The values a binning CASE / IF can return: its literal branches (NULL without ELSE)."""
    if isinstance(node, exp.WidthBucket):
        n = int(node.args["num_buckets"].this)
        return tuple(range(0, n + 2))
    branches = [i.args["true"] for i in node.args.get("ifs", [])] if isinstance(node, exp.Case) \
        else [node.args.get("true")]
    default = node.args.get("default") if isinstance(node, exp.Case) else node.args.get("false")
    values = []
    for b in branches + [default]:
        if b is None or isinstance(b, exp.Null):
            values.append(None)
        elif isinstance(b, exp.Literal):
            values.append(b.this if b.is_string else _number(b.this))
        else:
            raise errors.GroupByPolicyError(
                "a binning CASE must return literals so that its groups are public",
                hint="e.g. CASE WHEN x < 100 THEN 'low' ELSE 'high' END")
    return tuple(dict.fromkeys(values))


def _number(text: str):
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _evaluate_domain(expr: exp.Expression, columns: list[exp.Column], domains: list[tuple],
                     conditions: list[exp.Expression]) -> tuple:
    """Evaluate ``expr`` over the cartesian product of its columns' domains (in DuckDB)."""
    names = [f"c{i}" for i in range(len(columns))]
    rename = {(c.table, c.name): n for c, n in zip(columns, names)}

    def sub(node):
        if isinstance(node, exp.Column) and (node.table, node.name) in rename:
            return exp.column(rename[(node.table, node.name)], table="d")
        return node

    size = 1
    for d in domains:
        size *= len(d)
    if size > MAX_CELLS:
        raise errors.GroupByPolicyError(f"the domain of GROUP BY {expr.sql()} has {size} values "
                                        f"(more than {MAX_CELLS})")
    rows = [exp.Tuple(expressions=[literal(v) for v in combo]) for combo in itertools.product(*domains)]
    source = exp.Values(expressions=rows, alias=exp.TableAlias(
        this=exp.to_identifier("d"), columns=[exp.to_identifier(n) for n in names]))
    position = exp.Window(this=exp.RowNumber())
    inner = exp.select(exp.alias_(expr.copy().transform(sub), "v"), exp.alias_(position, "pos")).from_(source)
    if conditions:
        inner = inner.where(exp.and_(*[c.copy().transform(sub) for c in conditions]))
    # Keep the first-seen order (the domain's declared order), not DuckDB's hash order.
    query = exp.select("v").from_(inner.subquery("q")).group_by("v").order_by("MIN(pos)")
    return tuple(r[0] for r in duckdb.sql(query.sql("duckdb")).fetchall())


def cell_grid(q: BoundQuery) -> CellGrid:
    groups = []
    for g in q.group_by:
        rel = next(iter(q.relations_of(g)))
        cols = list(dict.fromkeys(g.find_all(exp.Column)))
        if isinstance(g, BINNING) and any(q.column_of(c).role is not Role.DIMENSION for c in cols):
            domain = _literal_outputs(g)
        else:
            domains = []
            for c in cols:
                col = q.column_of(c)
                d = tuple(col.domain or ())
                if (col.nullable or rel in q.nullable_relations) and None not in d:
                    d = d + (None,)
                domains.append(d)
            colset = {(c.table, c.name) for c in cols}
            narrowing = [w for w in q.where
                         if {(c.table, c.name) for c in w.find_all(exp.Column)} <= colset]
            domain = _evaluate_domain(g, cols, domains, narrowing)
        groups.append(Group(g, rel, domain))
    grid = CellGrid(tuple(groups))
    if grid.size > MAX_CELLS:
        raise errors.GroupByPolicyError(f"the GROUP BY has {grid.size} cells (more than {MAX_CELLS})",
                                        hint="group by fewer or coarser dimensions")
    return grid
