"""The dialect's functions, each declared once.

An entry says everything the pipeline needs of a function: its SQL name and
arity, the sqlglot node it becomes (which means what DuckDB means by it — every
party's local SQL and the oracle run it in DuckDB), the range of its values from
its arguments' ranges (so that it can enter MPC as a bounded integer), and,
for the few that may combine several parties' columns, how the secure row phase
computes it on secret-shared arrays.  The parser, the planner's bounds, the
secure engine and the dialect reference all read this registry; a function that
is not here does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlglot import exp

from sqlmpc.errors import SqlSyntaxError, UnsupportedSqlError
from sqlmpc.sql.binning import MAX_BUCKETS, literal_number, width_bucket_case

Interval = tuple[float, float, int]           # (lowest value, highest value, decimal scale)


class FunctionUseError(Exception):
    """A function called in a way it does not allow; the parser places it at the call."""

    def __init__(self, cls: type, message: str, hint: str | None = None):
        super().__init__(message)
        self.cls, self.message, self.hint = cls, message, hint


@dataclass(frozen=True)
class Aggregate:
    name: str
    node: type[exp.Expression]
    arity: int


@dataclass(frozen=True)
class Scalar:
    name: str
    arity: tuple[int, int | None]                            # (fewest, most) arguments; None: no most
    build: Callable[[str, list[exp.Expression]], exp.Expression]   # (the name as written, arguments) -> node
    example: str
    node: type[exp.Expression] | None = None                 # the class it builds, where one class is its own
    bound: Callable[[list[Interval]], Interval] | None = None
    secure: Callable | None = None                           # (mpc, [secure arrays]) -> secure array


# -- aggregates -------------------------------------------------------------------------

AGGREGATES = {a.name: a for a in (
    Aggregate("COUNT", exp.Count, 1),
    Aggregate("SUM", exp.Sum, 1), Aggregate("AVG", exp.Avg, 1),
    Aggregate("MIN", exp.Min, 1), Aggregate("MAX", exp.Max, 1),
    Aggregate("STDDEV", exp.Stddev, 1), Aggregate("STDDEV_SAMP", exp.StddevSamp, 1),
    Aggregate("STDDEV_POP", exp.StddevPop, 1),
    # sqlglot (duckdb) reads VAR_SAMP as Variance, like VARIANCE.
    Aggregate("VARIANCE", exp.Variance, 1), Aggregate("VAR_SAMP", exp.Variance, 1),
    Aggregate("VAR_POP", exp.VariancePop, 1),
    Aggregate("CORR", exp.Corr, 2), Aggregate("COVAR_POP", exp.CovarPop, 2),
    Aggregate("COVAR_SAMP", exp.CovarSamp, 2), Aggregate("REGR_SLOPE", exp.RegrSlope, 2),
    Aggregate("REGR_INTERCEPT", exp.RegrIntercept, 2), Aggregate("REGR_R2", exp.RegrR2, 2),
)}


# -- scalar functions ---------------------------------------------------------------------

def _union(args: list[Interval]) -> Interval:
    """Every value is one of the arguments' (COALESCE, GREATEST, LEAST)."""
    if not args:
        return 0, 0, 0
    return min(a[0] for a in args), max(a[1] for a in args), max(a[2] for a in args)


def _abs(args: list[Interval]) -> Interval:
    lo, hi, scale = args[0]
    return 0, max(abs(lo), abs(hi)), scale


def _secure_max(mpc, xs):
    out = xs[0]
    for x in xs[1:]:
        out = x + (out - x) * mpc.np_less(x, out)      # the larger of the two, obliviously
    return out


def _secure_min(mpc, xs):
    out = xs[0]
    for x in xs[1:]:
        out = x + (out - x) * mpc.np_less(out, x)
    return out


def _variadic(cls):
    return lambda _, args: cls(this=args[0], expressions=args[1:], **(
        {"ignore_nulls": True} if cls in (exp.Greatest, exp.Least) else {}))


def _round(_, args):
    return exp.Round(this=args[0], **({"decimals": args[1]} if len(args) == 2 else {}))


WIDTH_BUCKET_EXAMPLE = "WIDTH_BUCKET(c.cost_eur, 0, 10000, 10)"


def _width_bucket(_, args):
    """WIDTH_BUCKET, translated for DuckDB (which has none) into a binning CASE."""
    value, *bounds = args
    lo, hi, n = (literal_number(b) for b in bounds)
    example = f"e.g. {WIDTH_BUCKET_EXAMPLE}"
    if None in (lo, hi, n):
        raise FunctionUseError(UnsupportedSqlError, "WIDTH_BUCKET needs literal numbers as bounds and bucket count",
                               f"the buckets must be public: {example}")
    if n.denominator != 1 or not 1 <= n <= MAX_BUCKETS:
        raise FunctionUseError(SqlSyntaxError, f"WIDTH_BUCKET's bucket count must be a whole number from 1 to "
                               f"{MAX_BUCKETS}, not {float(n):g}", example)
    if not lo < hi:
        raise FunctionUseError(SqlSyntaxError, f"WIDTH_BUCKET's lower bound ({float(lo):g}) must be below its upper "
                               f"bound ({float(hi):g})", example)
    return width_bucket_case(value, lo, hi, int(n))


DATE_PARTS = ("YEAR", "MONTH", "DAY")


def _date_part(written, args):
    part = args[0]
    if not (isinstance(part, exp.Literal) and part.is_string and part.this.upper() in DATE_PARTS):
        raise FunctionUseError(UnsupportedSqlError, "DATE_PART needs 'year', 'month' or 'day' as its first argument",
                               "e.g. DATE_PART('year', admitted)")
    # sqlglot keeps DATE_PART as an anonymous function under the name as written.
    return exp.Anonymous(this=written, expressions=args)


SCALARS = {f.name: f for f in (
    Scalar("ABS", (1, 1), lambda _, a: exp.Abs(this=a[0]), "ABS(x)", exp.Abs, _abs),
    Scalar("ROUND", (1, 2), _round, "ROUND(x, 2)", exp.Round),
    Scalar("COALESCE", (1, None), _variadic(exp.Coalesce), "COALESCE(x, 0)", exp.Coalesce, _union),
    Scalar("LEAST", (1, None), _variadic(exp.Least), "LEAST(x, 0)", exp.Least, _union, _secure_min),
    Scalar("GREATEST", (1, None), _variadic(exp.Greatest), "GREATEST(x, 0)", exp.Greatest, _union, _secure_max),
    Scalar("WIDTH_BUCKET", (4, 4), _width_bucket, WIDTH_BUCKET_EXAMPLE),
    Scalar("YEAR", (1, 1), lambda _, a: exp.Year(this=a[0]), "YEAR(d)", exp.Year),
    Scalar("MONTH", (1, 1), lambda _, a: exp.Month(this=a[0]), "MONTH(d)", exp.Month),
    Scalar("DATE_PART", (2, 2), _date_part, "DATE_PART('year', d)"),
)}

_BY_NODE = {f.node: f for f in SCALARS.values() if f.node is not None}


def scalar_of(node: exp.Expression) -> Scalar | None:
    """The registry's entry for a node the parser built from a scalar function."""
    return _BY_NODE.get(type(node))


def arguments(node: exp.Expression) -> list[exp.Expression]:
    """A function node's arguments, in order (``this``, then ``expressions`` or ``decimals``)."""
    rest = node.expressions or [node.args[k] for k in ("decimals",) if node.args.get(k) is not None]
    return [node.this, *rest]
