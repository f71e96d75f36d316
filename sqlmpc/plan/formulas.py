"""Aggregates become moments (sums per cell), outputs become formulas over moments."""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import TYPE_CHECKING

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.plan.query import conjuncts, is_aggregate
from sqlmpc.plan.build import ONE, M, flag, is_flag, minus, over, times
from sqlmpc.plan.canonical import expand
from sqlmpc.plan.local import interval
from sqlmpc.plan.plan import Guard, Moment
from sqlmpc.plan.release import DominanceTest, contributor_conditions, extreme_values, has_measure
from sqlmpc.sql.params import literal
from sqlmpc.sql.positions import node_position

ZERO = exp.Literal.number(0)

if TYPE_CHECKING:      # annotations only: planner imports this module, so a run-time import would be a circle
    from sqlmpc.plan.planner import Planner


def coefficient(c: Fraction, m: exp.Expression) -> exp.Expression:
    """``c · m`` for a rational constant c, as the secure engine's formulas spell it."""
    out = m if abs(c.numerator) == 1 else times(exp.Literal.number(abs(c.numerator)), m)
    out = out if c.denominator == 1 else over(out, exp.Literal.number(c.denominator))
    return exp.Neg(this=exp.Paren(this=out)) if c < 0 else out


def if_undefined(formula: exp.Expression, guard: exp.Expression, value: str) -> exp.Expression:
    """``formula``, but ``value`` where it is undefined (zero denominator) while ``guard`` ≠ 0."""
    return exp.Anonymous(this="IF_UNDEFINED", expressions=[formula, guard.copy(), exp.Literal.string(value)])


def first_held(node: exp.Expression, q, weight: exp.Expression, moment) -> exp.Expression:
    """MIN/MAX of a dimension: FIRST_HELD((persons holding each value), (the values)), from the extreme end.

    The same counts are the extreme guard (sqlmpc.plan.release): the result rests on k persons.
    """
    values = extreme_values(node, q)
    held = [moment(times(weight, flag(exp.EQ(this=node.this.copy(), expression=literal(v)))), "persons")
            for v in values]
    return exp.Anonymous(this="FIRST_HELD", expressions=[exp.Tuple(expressions=held),
                                                         exp.Tuple(expressions=[literal(v) for v in values])])


def may_be_null(e: exp.Expression, q) -> bool:
    """Whether the row expression ``e`` can be NULL on some row: a NULL column or a LEFT JOIN's missing
    row inside it, a CASE without ELSE (or with a NULL branch), a NULL literal, a division."""
    if isinstance(e, exp.Null):
        return True
    if isinstance(e, (exp.Literal, exp.Boolean)):
        return False
    if isinstance(e, exp.Column):
        return q.column_of(e).nullable or e.table in q.nullable_relations
    if isinstance(e, exp.Case):
        values = [i.args.get("true") for i in e.args.get("ifs", [])] + [e.args.get("default")]
        return any(v is None or may_be_null(v, q) for v in values)
    if isinstance(e, exp.If):
        return any(v is None or may_be_null(v, q) for v in (e.args.get("true"), e.args.get("false")))
    if isinstance(e, exp.Coalesce):
        return all(may_be_null(v, q) for v in [e.this, *e.expressions])
    if isinstance(e, (exp.Div, exp.Mod, exp.IntDiv)):
        d = e.expression.unnest()
        if not (isinstance(d, exp.Literal) and d.is_number and float(d.this) != 0):
            return True              # x / 0 is NULL in DuckDB
    if isinstance(e, (exp.Nullif, exp.TryCast)):
        return True
    return any(may_be_null(c, q) for c in e.iter_expressions())


class Formulas:
    """Aggregates → moments, and outputs → formulas over moments.

    Moments are built in the query's own terms (e.g. ``flag(c.year = 2024) *
    c.cost * c.cost``) and only then localised, so that whatever one party can
    compute — including the whole product — becomes one of its local columns.
    """

    def __init__(self, planner: Planner, moments: dict[str, Moment]):
        self.p = planner
        self.q = planner.q
        self.moments = moments
        self.guards: dict[tuple, Guard] = {}
        self.by_key: dict[tuple[str, str], str] = {}        # (kind, local SQL) -> moment name
        rule = self.q.federation.policy.dominance
        self.dominance = DominanceTest.of(rule) if rule is not None else None
        # Perturbed plans (sqlmpc.plan.perturbation): moment -> (count | magnitude, its cell-key sets, S2).
        self.perturb = planner.perturb
        self.targets: dict[str, tuple[str, tuple[str, ...], str | None]] = {}

    def moment(self, expr: exp.Expression, kind: str = "sum") -> exp.Column:
        local = self.p.localize(expr) if expr is not ONE else ONE
        key = (kind, local.sql())
        if key in self.by_key:
            return M(self.by_key[key])
        name = f"m{len(self.moments)}"
        self.moments[name] = Moment(name, local, kind)
        self.by_key[key] = name
        return M(name)

    def persons(self):
        return self.moment(ONE, "persons")

    def output(self, node: exp.Expression) -> exp.Expression:
        if is_aggregate(node) or isinstance(node, exp.Filter):
            return self.aggregate(node)
        if isinstance(node, exp.Column):
            raise errors.UnsupportedExpressionError(f"{node.sql()} cannot be mixed with aggregates in one output",
                                                    sql=self.q.sql, **node_position(node))
        out = node.copy()
        for key, child in node.args.items():
            if isinstance(child, exp.Expression):
                out.set(key, self.output(child))
        return out

    def presence(self, e: exp.Expression) -> exp.Expression:
        """1 where ``e`` is not NULL: NULL columns, rows a LEFT JOIN did not match, a CASE's NULL branch."""
        return flag(exp.Not(this=exp.Is(this=e.copy(), expression=exp.null()))) if may_be_null(e, self.q) else ONE

    def guard(self, node: exp.Expression, weight: exp.Expression) -> None:
        """Register what the aggregate's value rests on (sqlmpc.plan.release): contributors and dominance."""
        for cond in contributor_conditions(node, self.q):
            tests = [flag(c) for c in conjuncts(cond) if c != exp.true()]
            m = self.moment(times(weight, *tests), "persons")
            self.guards.setdefault(("contributors", m.name), Guard("contributors", (m.name,)))
        if self.dominance is None or isinstance(node, (exp.Count, exp.Min, exp.Max)):
            return
        args = [a for a in (node.this, node.args.get("expression")) if isinstance(a, exp.Expression)]
        present = [self.presence(a) for a in args]
        for x in args:
            if has_measure(x, self.q):
                s1 = self.moment(times(weight, *present, x))
                s2 = self.moment(times(weight, *present, x), "sum2")
                self.guards.setdefault(("dominance", s1.name), Guard("dominance", (s1.name, s2.name),
                                                                      self.dominance.constant))

    def perturbed(self, m: exp.Column, weight: exp.Expression, factors: tuple, persons: bool = False) -> None:
        """Record a released moment Σ weight·Π factors of a perturbed plan (sqlmpc.plan.perturbation).

        A product of flags is a count: its cell key is over what it counts — the persons of a
        COUNT(DISTINCT) (``persons``), else the rows, each adding its person's record key, so that
        removing some of a person's rows moves the key as removing the person does.  Otherwise a
        sum of rows: its cell key is over the rows of the contributor sets of the product of its
        value factors (the terms that are not zero, as the release rules count them), its noise
        is scaled by its S2.  Both depend on the moment's own expression only, so a rephrased or
        reordered query gets the same noise for the same moment.
        """
        if not self.perturb or m.name in self.targets:
            return
        kind = "cellkey" if persons else "rowkey"
        flags = [f for f in factors if is_flag(f) or f is ONE]
        values = [f for f in factors if not (is_flag(f) or f is ONE)]
        if not values:
            self.targets[m.name] = ("count", (self.moment(times(weight, *flags), kind).name,), None)
            return
        sets = [self.moment(times(weight, *flags, *[flag(c) for c in conjuncts(cond) if c != exp.true()]),
                            kind).name
                for cond in contributor_conditions(exp.Sum(this=times(*values)), self.q)]
        s2 = self.moment(times(weight, *factors), "sum2").name
        self.targets[m.name] = ("magnitude", tuple(dict.fromkeys(sets)), s2)

    def scale(self, *factors: exp.Expression) -> int:
        """The decimal scale of a product's moment: its value factors' scales added (flags have none)."""
        return sum(interval(f, self.q)[2] for f in factors if not (f is ONE or is_flag(f)))

    def aggregate(self, node: exp.Expression) -> exp.Expression:
        weight = ONE
        if isinstance(node, exp.Filter):
            weight = flag(node.expression.this)
            node = node.this
        self.guard(node, weight)

        def total(*factors, scale: int = 0) -> exp.Expression:
            m = self.moment(times(weight, *factors))
            self.perturbed(m, weight, factors)
            return over(m, exp.Literal.number(10 ** scale)) if scale else m

        def sums(*factors) -> exp.Expression:
            """Σ weight·Π factors; in a perturbed plan, the combination of its monomials' sums, each
            perturbed once as a base statistic (sqlmpc.plan.canonical): SUM(3*x) is 3·SUM(x) as released."""
            if not self.perturb:
                return total(*factors, scale=self.scale(*factors))
            terms = [coefficient(c, total(*mono, scale=self.scale(*mono))) for c, mono in expand(*factors)]
            return functools.reduce(lambda a, b: exp.Add(this=a, expression=b), terms) if terms else ZERO

        if isinstance(node, exp.Count):
            if isinstance(node.this, exp.Star) or node.this is None:
                return total()
            if isinstance(node.this, exp.Distinct):
                col = node.this.expressions[0]
                present = self.presence(col) if col.table in self.q.nullable_relations else ONE
                m = self.moment(times(weight, present), "persons")
                self.perturbed(m, weight, (present,), persons=True)
                return m
            return total(self.presence(node.this))

        if isinstance(node, (exp.Min, exp.Max)):
            # The first value of the dimension (from the extreme end) that anyone in the cell holds,
            # released where at least k persons hold it: its per-value counts are the guard.
            formula = first_held(node, self.q, weight, self.moment)
            held = tuple(c.name for c in formula.expressions[0].expressions)
            self.guards.setdefault(("extreme", *held), Guard("extreme", held))
            return formula
        x = node.this
        px = self.presence(x)

        if isinstance(node, (exp.Sum, exp.Avg, exp.Stddev, exp.StddevSamp, exp.StddevPop,
                             exp.Variance, exp.VariancePop)):
            n = total(px)
            s = sums(px, x)
            if isinstance(node, exp.Sum):
                # NULL when the cell has no non-NULL value: s * n / n is undefined exactly then.
                return over(times(s, n), n)
            if isinstance(node, exp.Avg):
                return over(s, n)
            ss = sums(px, x, x)
            num = minus(times(n, ss), times(s, s))
            samp = isinstance(node, (exp.Stddev, exp.StddevSamp, exp.Variance))
            var = over(num, times(n, minus(n, ONE) if samp else n))
            return exp.Sqrt(this=var) if isinstance(node, (exp.Stddev, exp.StddevSamp, exp.StddevPop)) else var

        # Two-argument aggregates f(y, x), over the rows where both are present.
        y, py = x, px
        x = node.expression
        px = self.presence(x)
        n = total(py, px)
        sum_x, sum_y = sums(py, px, x), sums(py, px, y)
        sxy = sums(py, px, x, y)
        sxx = sums(py, px, x, x)
        syy = sums(py, px, y, y)
        cov = minus(times(n, sxy), times(sum_x, sum_y))
        varx = minus(times(n, sxx), times(sum_x, sum_x))
        vary = minus(times(n, syy), times(sum_y, sum_y))
        if isinstance(node, exp.CovarPop):
            return over(cov, times(n, n))
        if isinstance(node, exp.CovarSamp):
            return over(cov, times(n, minus(n, ONE)))
        # Where the ratio is undefined DuckDB gives NaN (CORR, REGR_SLOPE on at least one row)
        # or 1 (REGR_R2 when only y is constant); if_undefined keeps those semantics.
        if isinstance(node, exp.RegrSlope):
            return if_undefined(over(cov, varx), n, "NaN")
        if isinstance(node, exp.RegrIntercept):
            return over(minus(times(sum_y, varx), times(cov, sum_x)), times(n, varx))
        if isinstance(node, exp.Corr):
            return if_undefined(over(cov, exp.Sqrt(this=times(varx, vary))), n, "NaN")
        if isinstance(node, exp.RegrR2):
            return if_undefined(over(times(cov, cov), times(varx, vary)), varx, "1")
        raise errors.UnsupportedExpressionError(f"aggregate {node.sql()} is not supported", sql=self.q.sql,
                                                **node_position(node))


ROOT_ONLY = ("the square root behind STDDEV, CORR and the like, REGR_SLOPE and REGR_R2 (defined apart where x "
             "is constant), or MIN/MAX")


def check_releasable(formula: exp.Expression, item: exp.Expression, q, root_only: bool = True) -> None:
    """STDDEV/CORR (a square root) and MIN/MAX are released as they are: refuse arithmetic over them."""
    def special(node):
        return isinstance(node, exp.Sqrt) or (isinstance(node, exp.Anonymous)
                                              and node.name in ("FIRST_HELD", "IF_UNDEFINED"))
    top = formula.args["expressions"][0] if (isinstance(formula, exp.Anonymous)
                                             and formula.name == "IF_UNDEFINED") else formula
    allowed = set()
    if root_only:
        allowed |= {id(top), id(formula)}
        if isinstance(top, exp.Div) and isinstance(top.expression, exp.Sqrt):
            allowed.add(id(top.expression))               # CORR: cov / √(varx·vary)
    if any(special(n) and id(n) not in allowed for n in formula.walk()):
        raise errors.UnsupportedSqlError(
            f"{item.sql()}: sqlmpc releases {ROOT_ONLY} only as a column of its own"
            + ("" if root_only else ", not in HAVING"), sql=q.sql, **node_position(item),
            hint="select STDDEV_SAMP(x) (or CORR, REGR_SLOPE, REGR_R2, MIN, MAX) by itself and compute with it "
                 "afterwards")


ARITHMETIC = (exp.Paren, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg)
CONNECTIVES = (exp.Paren, exp.And, exp.Or, exp.Not)
COMPARISONS = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.NEQ)


def check_computable(item: exp.Expression, q, having: bool = False) -> None:
    """What the secure engine computes over aggregate outputs: + - * / of aggregates and numbers, and in
    HAVING comparisons of those joined by AND, OR, NOT.  Refuse anything else (ROUND, CASE, %, ...) now,
    before any party works, instead of failing in the secure engine."""
    def check(node, condition: bool):
        if is_aggregate(node) or isinstance(node, exp.Filter):
            return
        if condition and isinstance(node, CONNECTIVES):
            allowed = True
        elif condition and isinstance(node, COMPARISONS):
            condition, allowed = False, True
        else:
            allowed = isinstance(node, ARITHMETIC) or (isinstance(node, exp.Literal) and not node.is_string)
        if not allowed:
            raise errors.UnsupportedExpressionError(
                f"{node.sql()}: the secure engine computes over aggregate outputs only + - * / and numbers"
                + (", compared (< <= = <> >= >) and joined by AND, OR, NOT" if having else ""),
                sql=q.sql, **node_position(node),
                hint="select the aggregate itself and round, compare or combine it afterwards")
        for child in node.iter_expressions():
            check(child, condition)

    check(item, having)


def parenthesize(tree: exp.Expression) -> exp.Expression:
    """Make the printed formula read as the tree computes (built trees carry no parentheses)."""
    for node in list(tree.find_all(exp.Binary)):
        for key in ("this", "expression"):
            child = node.args.get(key)
            if isinstance(child, exp.Binary) and not isinstance(child, exp.Column):
                node.set(key, exp.Paren(this=child))
    return tree
