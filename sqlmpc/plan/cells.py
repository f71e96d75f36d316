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

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Role
from sqlmpc.plan.query import BINNING, BoundQuery
from sqlmpc.plan.typecheck import USER_ERRORS, scratch
from sqlmpc.sql.params import literal
from sqlmpc.sql.positions import node_position

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


def _literal_outputs(node: exp.Expression, never_null=lambda e: False) -> tuple:
    """The values a binning CASE / IF can return: its literal branches (NULL without ELSE).

    A branch ``WHEN x IS NULL`` is left out when ``never_null(x)``: it can never be taken
    (WIDTH_BUCKET's translation has one for NULL values).
    """
    searched = isinstance(node, exp.Case) and node.this is None      # CASE WHEN cond THEN ..., no operand
    ifs = node.args.get("ifs", []) if isinstance(node, exp.Case) else [node]
    branches = [i.args["true"] for i in ifs
                if not (searched and isinstance(i.this, exp.Is) and isinstance(i.this.expression, exp.Null)
                        and never_null(i.this.this))]
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


def _never_null(q: BoundQuery, node: exp.Expression) -> bool:
    """A plain column that the catalog declares NOT NULL, from a relation no LEFT JOIN can null."""
    return (isinstance(node, exp.Column) and node.table not in q.nullable_relations
            and not q.column_of(node).nullable)


def _number(text: str):
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _evaluate_domain(expr: exp.Expression, columns: list[exp.Column], domains: list[tuple],
                     conditions: list[exp.Expression], sql: str | None = None) -> tuple:
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
    try:
        return tuple(r[0] for r in scratch().sql(query.sql("duckdb")).fetchall())
    except USER_ERRORS as exc:      # at a domain value the type check's samples did not hold
        raise errors.SqlTypeError(f"GROUP BY {expr.sql('duckdb')} cannot be evaluated on its domain: "
                                  f"{str(exc).splitlines()[0].partition(': ')[2]}", sql=sql, **node_position(expr),
                                  hint="compute with values of the column's type; DESCRIBE party.table lists "
                                       "the domain") from None


def _empty_domain(q: BoundQuery, group: exp.Expression, domains: list[tuple],
                  narrowing: list[exp.Expression]) -> errors.EmptyGridError:
    """The WHERE leaves a group no public value: no row can match, and there is no cell to report."""
    shown = ", ".join(", ".join(str(v) for v in d[:10]) + (", ..." if len(d) > 10 else "") for d in domains)
    at = narrowing[0] if narrowing else group
    return errors.EmptyGridError(
        f"the WHERE clause leaves GROUP BY {group.sql('duckdb')} no value of its public domain ({shown}): "
        "no row can match", sql=q.sql, **node_position(at),
        hint="compare with values of the domain (DESCRIBE party.table lists them), or drop the GROUP BY")


def cell_grid(q: BoundQuery) -> CellGrid:
    groups = []
    for g in q.group_by:
        rel = next(iter(q.relations_of(g)))
        cols = list(dict.fromkeys(g.find_all(exp.Column)))
        if isinstance(g, BINNING) and any(q.column_of(c).role is not Role.DIMENSION for c in cols):
            domain = _literal_outputs(g, lambda e: _never_null(q, e))
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
            domain = _evaluate_domain(g, cols, domains, narrowing, q.sql)
            if not domain:
                raise _empty_domain(q, g, domains, narrowing)
        groups.append(Group(g, rel, domain))
    grid = CellGrid(tuple(groups))
    if grid.size > MAX_CELLS:
        raise errors.GroupByPolicyError(f"the GROUP BY has {grid.size} cells (more than {MAX_CELLS})",
                                        hint="group by fewer or coarser dimensions")
    return grid
