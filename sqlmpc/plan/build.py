"""Small builders of the planner's expression trees (flags, products, ratios)."""

from __future__ import annotations

from sqlglot import exp

ONE = exp.Literal.number(1)


def M(name: str) -> exp.Column:
    return exp.column(name, table="M")


def flag(cond: exp.Expression) -> exp.Expression:
    """A condition as a 0/1 number (how a row flag multiplies into a sum)."""
    return exp.Case(ifs=[exp.If(this=cond, true=ONE)], default=exp.Literal.number(0))


def is_flag(node: exp.Expression) -> bool:
    return (isinstance(node, exp.Case) and len(node.args.get("ifs", [])) == 1
            and node.args["ifs"][0].args["true"] == ONE and node.args.get("default") == exp.Literal.number(0))


def factor(f: exp.Expression, first: bool = False) -> exp.Expression:
    """``f`` as an operand of ``*``: a sum, a comparison or a connective (right of ``*`` also a ratio or a
    remainder) in parentheses.  A local column's SQL is the printed tree, and ``x + 1`` times itself
    must print as ``(x + 1) * (x + 1)``, not as ``x + 1 * x + 1``."""
    keeps = (exp.Mul, exp.Div, exp.Mod, exp.IntDiv) if first else (exp.Mul,)
    if isinstance(f, exp.Binary) and not isinstance(f, keeps):
        return exp.Paren(this=f.copy())
    return f.copy()


def times(*factors: exp.Expression) -> exp.Expression:
    factors = [f for f in factors if f is not ONE]
    if not factors:
        return ONE
    out = factor(factors[0], first=True)
    for f in factors[1:]:
        out = exp.Mul(this=out, expression=factor(f))
    return out


def minus(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Sub(this=a.copy(), expression=b.copy())


def over(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Div(this=a.copy(), expression=b.copy())
