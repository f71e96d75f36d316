"""An aggregate's argument as a polynomial: the base statistics a perturbed plan releases.

A sum's cell-key noise follows its contributors (the cell key) and the size of their
contributions (S2), rounded to a power of two.  ``SUM(3 * x)`` has the same contributors as
``SUM(x)`` and an S2 nine times as large, so its noise is the same draw at a scale that is not
three times as large: several such releases are a linear system that cancels the noise, and
``SUM(x + y)`` beside ``SUM(x)`` and ``SUM(y)`` is another.  So a perturbed plan never sums an
expression: it expands the argument into monomials with constant coefficients —
``SUM(3*x + 2*y*z - 5)`` is ``3·SUM(x) + 2·SUM(y·z) − 5·COUNT`` — and perturbs each monomial's
sum, the one base statistic it is, once.  Every rephrasing, rescaling or linear combination of
the same monomials is then computed from the same noisy values after release, and tells
nothing new.

A CASE becomes flags times its arms (``CASE WHEN c THEN x ELSE y END`` = ``flag(c)·x +
flag(NOT c)·y``); a factor that is neither a number, a sum, a product, a quotient by a constant
nor such a CASE (a column, ABS(x), LEAST(x, 100)) is a variable of its own.
"""

from __future__ import annotations

import functools
from fractions import Fraction

from sqlglot import exp

from sqlmpc.plan.build import flag, is_flag, times
from sqlmpc.plan.local import is_boolean

Monomial = tuple[exp.Expression, ...]
Polynomial = dict[tuple[str, ...], tuple[Fraction, Monomial]]


def expand(*factors: exp.Expression) -> list[tuple[Fraction, Monomial]]:
    """The product of ``factors`` as (coefficient, monomial) pairs, zero terms dropped, in a
    canonical order (by the monomials' SQL); the constant term has the empty monomial."""
    poly: Polynomial = {(): (Fraction(1), ())}
    for f in factors:
        poly = _product(poly, _poly(f))
    return [poly[key] for key in sorted(poly) if poly[key][0] != 0]


def _poly(node: exp.Expression) -> Polynomial:
    if isinstance(node, exp.Paren):
        return _poly(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        return {(): (Fraction(node.this), ())}
    if isinstance(node, exp.Neg):
        return _scaled(_poly(node.this), Fraction(-1))
    if isinstance(node, (exp.Add, exp.Sub)):
        right = _poly(node.expression)
        return _sum(_poly(node.this), right if isinstance(node, exp.Add) else _scaled(right, Fraction(-1)))
    if isinstance(node, exp.Mul):
        return _product(_poly(node.this), _poly(node.expression))
    if isinstance(node, exp.Div):
        divisor = _poly(node.expression)
        if list(divisor) == [()] and divisor[()][0] != 0:
            return _scaled(_poly(node.this), 1 / divisor[()][0])
    if isinstance(node, exp.Case) and not is_flag(node) and node.this is None:
        return _case(node)
    return {(node.sql(),): (Fraction(1), (node,))}


def arms(node: exp.Case) -> list[tuple[exp.Expression, exp.Expression]]:
    """A searched CASE as (the condition that its arm is the one taken, the arm's value), for
    every arm with a value (an arm without one, or no ELSE, is NULL)."""
    out, earlier = [], []
    branches = [(i.this, i.args.get("true")) for i in node.args.get("ifs", [])]
    for cond, value in branches + [(None, node.args.get("default"))]:
        held = [exp.Not(this=exp.Paren(this=c.copy())) for c in earlier] + ([cond.copy()] if cond is not None else [])
        if cond is not None:
            earlier.append(cond)
        if value is not None and not isinstance(value, exp.Null):
            out.append((exp.and_(*held), value))
    return out


def case_sum(node: exp.Case) -> exp.Expression:
    """The CASE as arithmetic, Σ flag(arm taken) · value (0 where it is NULL): a row expression MPC can
    compute when its conditions or values span parties."""
    terms = [times(flag(held), flag(value) if is_boolean(value) else value) for held, value in arms(node)]
    return functools.reduce(lambda a, b: exp.Add(this=a, expression=b), terms) if terms else exp.Literal.number(0)


def case_has_value(node: exp.Case) -> exp.Expression:
    """``node IS NOT NULL`` as a condition over its arms."""
    taken = [exp.and_(held, exp.Not(this=exp.Is(this=value.copy(), expression=exp.null())))
             for held, value in arms(node)]
    return exp.or_(*taken) if taken else exp.false()


def _case(node: exp.Case) -> Polynomial:
    """Σ flag(first arm that holds) · its value; an arm without a value (no ELSE) adds nothing."""
    out: Polynomial = {}
    for held, value in arms(node):
        out = _sum(out, _product(_poly(flag(held)), _poly(value)))
    return out


def _sum(a: Polynomial, b: Polynomial) -> Polynomial:
    out = dict(a)
    for key, (coef, mono) in b.items():
        out[key] = (out[key][0] + coef, mono) if key in out else (coef, mono)
    return out


def _scaled(p: Polynomial, c: Fraction) -> Polynomial:
    return {key: (coef * c, mono) for key, (coef, mono) in p.items()}


def _product(a: Polynomial, b: Polynomial) -> Polynomial:
    out: Polynomial = {}
    for ka, (ca, ma) in a.items():
        for kb, (cb, mb) in b.items():
            pairs = sorted(zip(ka + kb, ma + mb), key=lambda kv: kv[0])
            key = tuple(k for k, _ in pairs)
            out = _sum(out, {key: (ca * cb, tuple(m for _, m in pairs))})
    return out
