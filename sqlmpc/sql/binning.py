"""WIDTH_BUCKET as a binning CASE: DuckDB has no width_bucket, and a CASE with literal
results is what every later layer already knows how to bin (public domain = its results).

``WIDTH_BUCKET(x, lo, hi, n)`` means what it means in PostgreSQL: bucket 0 below
``lo``, buckets 1..n of equal width on [lo, hi), bucket n + 1 from ``hi`` on, NULL for NULL.
"""

from __future__ import annotations

from fractions import Fraction

from sqlglot import exp

MAX_BUCKETS = 100     # each bucket is a CASE branch and a cell: planning grows with their number


def literal_number(node: exp.Expression) -> Fraction | None:
    """The exact value of a numeric literal (possibly negated), else None."""
    sign = 1
    while isinstance(node, (exp.Neg, exp.Paren)):
        sign = -sign if isinstance(node, exp.Neg) else sign
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string:
        return sign * Fraction(node.this)
    return None


def _number(value: Fraction) -> exp.Expression:
    if value.denominator == 1:
        node = exp.Literal.number(abs(value.numerator))
    else:
        node = exp.Literal.number(repr(abs(float(value))))
    return exp.Neg(this=node) if value < 0 else node


def width_bucket_case(value: exp.Expression, low: Fraction, high: Fraction, buckets: int) -> exp.Case:
    """``CASE WHEN x IS NULL THEN NULL WHEN x < lo THEN 0 WHEN x < lo + w THEN 1 ... ELSE n + 1 END``."""
    ifs = [exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null())]
    for i in range(buckets + 1):
        bound = low + (high - low) * i / buckets
        ifs.append(exp.If(this=exp.LT(this=value.copy(), expression=_number(bound)), true=exp.Literal.number(i)))
    return exp.Case(ifs=ifs, default=exp.Literal.number(buckets + 1))
