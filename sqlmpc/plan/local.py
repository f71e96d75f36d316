"""What one party computes alone: local groups, local columns and their scales.

Relations one party can join by itself form a local group ("local first"); each
expression over one group becomes a column of that party's local result, with
the decimal scale and bound at which it enters MPC.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.plan.typecheck import scratch
from sqlmpc.plan.query import BoundQuery, Join
from sqlmpc.plan.plan import LocalColumn
from sqlmpc.sql.functions import arguments, scalar_of
from sqlmpc.sql.positions import node_position

BOOLEAN = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is,
           exp.In, exp.Between, exp.Like, exp.Boolean)
SECURE_OPS = (exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Paren, exp.EQ, exp.NEQ, exp.GT, exp.GTE,
              exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Literal, exp.Boolean)


@dataclass
class LocalGroup:
    """Relations one party joins alone (same party, key equality): one local result.

    A relation LEFT-joined *to* an earlier group from another party makes its
    group ``nullable``: its rows may be missing from a joined row.
    """

    name: str
    members: list[str]
    joins: list[Join] = field(default_factory=list)
    nullable: bool = False


class LocalColumns:
    """The local columns of one group, collected while the query is split."""

    def __init__(self, q: BoundQuery, group: LocalGroup):
        self.q = q
        self.group = group
        self.exprs: dict[str, tuple[LocalColumn, exp.Expression]] = {}
        self.by_sql: dict[str, LocalColumn] = {}

    def add(self, node: exp.Expression) -> exp.Column:
        key = node.sql()
        if key in self.by_sql:
            return self.ref(self.by_sql[key])
        if is_boolean(node):
            col = LocalColumn(f"f{len(self.exprs)}", "flag", 0, 1, self.absent_flag(node))
        else:
            scale, bound = self.interval(node)
            col = LocalColumn(f"v{len(self.exprs)}", "value", scale, bound)
        self.exprs[col.name] = (col, node)
        self.by_sql[key] = col
        return self.ref(col)

    def ref(self, col: LocalColumn) -> exp.Column:
        out = exp.column(col.name, table=self.group.name)
        out.meta["scale"] = col.scale
        return out

    def absent_flag(self, node: exp.Expression) -> int:
        """The flag's value for a LEFT JOIN row without a match (all columns NULL)."""
        if not self.group.nullable:
            return 0
        nulled = node.copy().transform(lambda n: exp.null() if isinstance(n, exp.Column) else n)
        value = scratch().execute(exp.select(exp.func("coalesce", nulled, exp.false())).sql("duckdb")).fetchall()[0][0]
        return int(bool(value))

    def interval(self, node: exp.Expression) -> tuple[int, int]:
        """(decimal scale, bound on |round(value * 10**scale)|) by interval arithmetic on ranges."""
        lo, hi, scale = interval(node, self.q)
        return scale, int(max(abs(lo), abs(hi)) * 10 ** scale) + 1


def interval(node, q) -> tuple[float, float, int]:
    if isinstance(node, exp.Paren):
        return interval(node.this, q)
    if isinstance(node, exp.Column):
        col = q.column_of(node)
        if col.range is not None:
            return col.range[0], col.range[1], col.scale
        nums = [v for v in (col.domain or ()) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums:
            return min(nums), max(nums), 0
        raise errors.UnsupportedExpressionError(f"{node.sql()} has no numeric range to compute with",
                                                sql=q.sql, **node_position(node))
    if isinstance(node, exp.Literal) and not node.is_string:
        v = float(node.this)
        scale = len(node.this.split(".")[1]) if "." in node.this else 0
        return v, v, scale
    if isinstance(node, BOOLEAN):
        return 0, 1, 0
    if isinstance(node, exp.Neg):
        lo, hi, s = interval(node.this, q)
        return -hi, -lo, s
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        a0, a1, sa = interval(node.this, q)
        b0, b1, sb = interval(node.expression, q)
        if isinstance(node, exp.Add):
            return a0 + b0, a1 + b1, max(sa, sb)
        if isinstance(node, exp.Sub):
            return a0 - b1, a1 - b0, max(sa, sb)
        products = [a0 * b0, a0 * b1, a1 * b0, a1 * b1]
        return min(products), max(products), sa + sb
    function = scalar_of(node)
    if function is not None and function.bound is not None:
        return function.bound([interval(a, q) for a in arguments(node) if not isinstance(a, exp.Null)])
    if isinstance(node, (exp.Case, exp.If)):
        branches = [b for b in node.find_all(exp.Expression) if b.parent is node and not isinstance(b, BOOLEAN)]
        branches += [i.args["true"] for i in node.args.get("ifs", [])]
        vals = [interval(b, q) for b in branches if not isinstance(b, (exp.If,)) and b is not None
                and not isinstance(b, exp.Null)]
        if not vals:
            return 0, 0, 0
        return min(v[0] for v in vals), max(v[1] for v in vals), max(v[2] for v in vals)
    if isinstance(node, exp.Div):
        a0, a1, sa = interval(node.this, q)
        b0, b1, _ = interval(node.expression, q)
        if b0 == b1 and b0 != 0:
            vals = [a0 / b0, a1 / b0]
            return min(vals), max(vals), max(sa, 6)
    if isinstance(node, exp.WidthBucket):
        return 0, int(node.args["num_buckets"].this) + 1, 0
    raise errors.UnsupportedExpressionError(
        f"cannot bound the values of {node.sql()}", sql=q.sql, **node_position(node),
        hint="use measures with declared ranges and + - * CASE")


def value_scale(node: exp.Expression, q) -> int:
    """The decimal scale at which ``node`` enters MPC as an integer."""
    return interval(node, q)[2]


COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def scale_of(node: exp.Expression) -> int:
    return node.meta.get("scale", 0) if node.meta else 0


def rescale(node: exp.Expression, scale: int) -> exp.Expression:
    """``node`` times 10^(scale - its scale): the same number at a finer scale."""
    if scale_of(node) == scale:
        return node
    out = exp.Mul(this=node, expression=exp.Literal.number(10 ** (scale - scale_of(node))))
    out.meta["scale"] = scale
    return out


def constant(node: exp.Expression) -> exp.Expression:
    """A constant as an integer literal with its decimal scale (TRUE/FALSE as 1/0)."""
    value = scratch().execute(exp.select(node.copy()).sql("duckdb")).fetchall()[0][0]
    if value is None:
        raise errors.UnsupportedExpressionError(f"NULL constant {node.sql()} in a condition across parties",
                                                **node_position(node))
    if isinstance(value, bool):
        out, scale = exp.Literal.number(int(value)), 0
    else:
        number = decimal.Decimal(str(value)).normalize()
        scale = max(0, -number.as_tuple().exponent)
        out = exp.Literal.number(int(number.scaleb(scale)))
    out.meta["scale"] = scale
    return out


def is_boolean(node: exp.Expression) -> bool:
    """A condition: it enters MPC as a 0/1 flag (a CASE counts when every branch is a condition)."""
    node = node.unnest()
    if isinstance(node, BOOLEAN) or is_match_test(node):
        return True
    if isinstance(node, exp.Case):
        values = [i.args["true"] for i in node.args.get("ifs", [])] + [node.args.get("default")]
        return all(v is not None and is_boolean(v) for v in values)
    return False


def is_match_test(node):
    return isinstance(node, exp.Is) and isinstance(node.expression, exp.Null)


def local_groups(q: BoundQuery) -> dict[str, LocalGroup]:
    """Merge relations one party can join alone into local groups ("local first").

    A join merges into an earlier group when the joined table is a plain table
    at that group's one party and its ON clause links it to that group only.
    An inner join into a group that is itself LEFT-joined would change the
    outer join's meaning, so that one stays secure.
    """
    groups: dict[str, LocalGroup] = {}
    owner: dict[str, LocalGroup] = {}
    root = q.root
    groups[root.alias] = owner[root.alias] = LocalGroup(root.alias, [root.alias])
    for j in q.joins:
        rel = q.relations[j.relation]
        others = {a for pair in j.pairs for a, _ in pair} - {j.relation}
        target = {owner[a].name for a in others}
        group = groups[next(iter(target))] if len(target) == 1 else None
        if group is not None:
            party = {p for a in group.members for p in q.relations[a].parties}
            same = (not rel.is_horizontal and party == set(rel.parties)
                    and all(not q.relations[a].is_horizontal for a in group.members))
            if same and (not group.nullable or j.kind == "left"):
                group.members.append(j.relation)
                group.joins.append(j)
                owner[j.relation] = group
                continue
        groups[j.relation] = owner[j.relation] = LocalGroup(j.relation, [j.relation], nullable=j.kind == "left")
    return groups
