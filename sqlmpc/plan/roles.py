"""The column-role rules of the federation (docs/federation.md): keys only in joins and
COUNT(DISTINCT), measures only inside aggregates, attributes only in their owner's filters,
GROUP BY on dimensions only, no person-level output.  Each refusal is a specific
:class:`~sqlmpc.errors.PolicyError` pointing at the offending token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Column, Role
from sqlmpc.plan.query import AGGREGATES, BINNING, BoundQuery, is_aggregate, is_match_test

if TYPE_CHECKING:      # annotations only: bind imports this module, so a run-time import would be a circle
    from sqlmpc.plan.bind import Binder


class RolePolicy:
    """The column-role rules (docs/federation.md), checked on a bound query."""

    def __init__(self, binder: Binder, bq: BoundQuery):
        self.b = binder
        self.q = bq

    def err(self, cls, message, node, **kw):
        return self.b.error(cls, message, node, **kw)

    def col(self, c: exp.Column) -> Column:
        return self.q.relations[c.table].column(c.name)

    def check(self) -> None:
        q = self.q
        for cond in q.where:
            if any(is_aggregate(n) for n in cond.find_all(*AGGREGATES)):
                raise self.err(errors.SqlSyntaxError, "aggregates are not allowed in WHERE",
                               next(cond.find_all(*AGGREGATES)), hint="filter aggregates with HAVING")
            self.row_expression(cond, "WHERE", allow_measures=True, filter_relations=True)
        for g in q.group_by:
            self.group_expression(g)
        group_sql = {g.sql() for g in q.group_by}
        for name, expr in q.select:
            self.output(expr, group_sql)
        if q.having is not None:
            self.output(q.having, group_sql, clause="HAVING")
        for o in q.order_by:
            self.output(o.this, group_sql, clause="ORDER BY")

    def row_expression(self, node, clause, *, allow_measures: bool, filter_relations: bool = False):
        """Check a row-level expression (WHERE, FILTER, aggregate argument)."""
        rels = self.q.relations_of(node)
        for c in node.find_all(exp.Column):
            col = self.col(c)
            if col.role is Role.KEY and not is_match_test(c):
                raise self.err(errors.KeyColumnPolicyError,
                               f"key column '{c.table}.{c.name}' may only be used in JOIN ... ON and "
                               "COUNT(DISTINCT ...)", c, column_name=c.name,
                               hint="keys are pseudonyms: they are never compared, selected or grouped")
            if col.role is Role.MEASURE and not allow_measures:
                raise self.err(errors.MeasurePolicyError,
                               f"measure '{c.table}.{c.name}' may only be used inside an aggregate", c,
                               column_name=c.name, hint=f"e.g. SUM({c.table}.{c.name}) or AVG(...)")
            if col.role is Role.ATTRIBUTE and (not filter_relations or len(rels) > 1):
                raise self.err(errors.AttributePolicyError,
                               f"attribute '{c.table}.{c.name}' may only filter rows at its owner "
                               "(a WHERE condition on its own table)", c, column_name=c.name)

    def group_expression(self, g: exp.Expression):
        cols = list(g.find_all(exp.Column))
        if any(is_aggregate(n) for n in g.find_all(*AGGREGATES)):
            raise self.err(errors.GroupByPolicyError, "cannot GROUP BY an aggregate", g)
        if not cols:
            raise self.err(errors.GroupByPolicyError, "GROUP BY needs a column", g)
        rels = self.q.relations_of(g)
        if len(rels) > 1:
            raise self.err(errors.GroupByPolicyError,
                           "a GROUP BY expression must use the columns of one table", g,
                           hint="group by each table's dimension separately")
        binned = isinstance(g, BINNING)
        for c in cols:
            col = self.col(c)
            if col.role is Role.DIMENSION:
                continue
            if col.role is Role.MEASURE and binned:
                continue
            if col.role is Role.KEY and binned and is_match_test(c):
                continue
            if col.role is Role.KEY:
                raise self.err(errors.KeyColumnPolicyError,
                               f"cannot GROUP BY the key column '{c.table}.{c.name}'", c, column_name=c.name,
                               hint="a group per person would release person-level rows")
            raise self.err(errors.GroupByPolicyError,
                           f"cannot GROUP BY {col.role.value} '{c.table}.{c.name}': only dimensions have a "
                           "public domain", c, column_name=c.name,
                           hint="bin a measure with CASE WHEN ... THEN 'label' ... END or WIDTH_BUCKET")

    def output(self, node, group_sql: set[str], clause: str = "SELECT"):
        """An output expression: group-by expressions and aggregates combined with literals."""
        if node.sql() in group_sql:
            return
        if is_aggregate(node):
            self.aggregate(node)
            return
        if isinstance(node, exp.Filter):
            if not is_aggregate(node.this):
                raise self.err(errors.SqlSyntaxError, "FILTER applies to aggregates only", node)
            self.aggregate(node.this)
            self.row_expression(node.expression.this, "FILTER", allow_measures=True)
            return
        if isinstance(node, exp.Column):
            col = self.col(node)
            if col.role is Role.KEY:
                raise self.err(errors.KeyColumnPolicyError,
                               f"key column '{node.table}.{node.name}' cannot be output", node, column_name=node.name,
                               hint="count persons with COUNT(DISTINCT key) instead")
            raise self.err(errors.PersonLevelOutputError,
                           f"'{node.table}.{node.name}' is neither grouped nor aggregated ({clause})", node,
                           column_name=node.name,
                           hint="add it to GROUP BY or wrap it in an aggregate"
                           if col.role is Role.DIMENSION else f"aggregate it, e.g. AVG({node.table}.{node.name})")
        for child in node.iter_expressions():
            self.output(child, group_sql, clause)

    def aggregate(self, agg: exp.Expression):
        inner = [n for n in agg.iter_expressions() if any(is_aggregate(x) for x in n.find_all(*AGGREGATES))]
        if inner:
            raise self.err(errors.SqlSyntaxError, "aggregates cannot be nested", inner[0])
        if isinstance(agg, exp.Count) and isinstance(agg.this, exp.Distinct):
            args = agg.this.expressions
            if len(args) != 1 or not isinstance(args[0], exp.Column) or self.col(args[0]).role is not Role.KEY:
                raise self.err(errors.PolicyError, "COUNT(DISTINCT ...) counts persons: use a key column",
                               agg, hint="e.g. COUNT(DISTINCT p.pid)")
            return
        for arg in agg.iter_expressions():
            if isinstance(arg, exp.Star):
                continue
            self.row_expression(arg, "aggregate", allow_measures=True)
