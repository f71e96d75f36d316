"""SQL's three-valued logic for WHERE conditions evaluated in MPC.

MPC holds no NULLs: a party inputs a NULL (or a LEFT JOIN's missing row) as 0, so
``t.x + b.age > 18`` would keep a row where ``t.x`` is NULL and ``b.age`` > 18, which SQL
drops.  :func:`sql_true` rewrites a condition across parties into one that holds exactly
where SQL's condition is TRUE, from comparisons, AND, OR, NOT and presence tests
(``x IS NOT NULL``) that each party evaluates on its own columns.
"""

from __future__ import annotations

from sqlglot import exp

from sqlmpc.plan.local import COMPARISONS
from sqlmpc.sql.functions import scalar_of

NULL_PROPAGATING = (exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Paren)     # NULL in, NULL out


def sql_true(node: exp.Expression, q, groups_of) -> exp.Expression:
    """A condition that holds where ``node`` is TRUE in SQL (not FALSE, not NULL)."""
    return _truth(node, q, groups_of)[0]


def _truth(node, q, groups_of) -> tuple[exp.Expression, exp.Expression]:
    """(where ``node`` is TRUE, where it is FALSE)."""
    if len(groups_of(node)) <= 1:          # one party's DuckDB evaluates it, NULL semantics and all
        return node.copy(), exp.Not(this=exp.Paren(this=node.copy()))
    if isinstance(node, exp.Paren):
        return _truth(node.this, q, groups_of)
    if isinstance(node, exp.Not):
        true, false = _truth(node.this, q, groups_of)
        return false, true
    if isinstance(node, (exp.And, exp.Or)):
        (t1, f1), (t2, f2) = _truth(node.this, q, groups_of), _truth(node.expression, q, groups_of)
        if isinstance(node, exp.And):
            return exp.and_(t1, t2), exp.or_(f1, f2)
        return exp.or_(t1, t2), exp.and_(f1, f2)
    if isinstance(node, exp.Between):
        low = exp.GTE(this=node.this.copy(), expression=node.args["low"].copy())
        high = exp.LTE(this=node.this.copy(), expression=node.args["high"].copy())
        return _truth(exp.and_(low, high), q, groups_of)
    if isinstance(node, COMPARISONS):
        present = [exp.Not(this=exp.Is(this=s.copy(), expression=exp.null()))
                   for s in _operands(node, groups_of) if _may_be_null(s, q)]
        if present:
            return (exp.and_(node.copy(), *present),
                    exp.and_(exp.Not(this=exp.Paren(this=node.copy())), *[p.copy() for p in present]))
    return node.copy(), exp.Not(this=exp.Paren(this=node.copy()))


def _operands(node, groups_of) -> list[exp.Expression]:
    """The largest one-party subtrees of a comparison's operands, reached through + - * and negation."""
    out = []
    for child in node.iter_expressions():
        function = scalar_of(child)
        secure = function is not None and function.secure is not None   # its arguments are never NULL
        if len(groups_of(child)) <= 1 or not (isinstance(child, NULL_PROPAGATING) or secure):
            out.append(child)
        else:
            out += _operands(child, groups_of)
    return out


def _may_be_null(node: exp.Expression, q) -> bool:
    if isinstance(node, (exp.Literal, exp.Boolean)):
        return False
    columns = list(node.find_all(exp.Column))
    plain = all(isinstance(n, NULL_PROPAGATING + (exp.Column, exp.Literal)) for n in node.walk())
    return not plain or any(c.table in q.nullable_relations or q.column_of(c).nullable for c in columns)
