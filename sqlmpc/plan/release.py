"""The release rules, stated once for the secure engine and the plaintext oracle.

A cell of the result is released only when every value in it rests on at
least k persons and no value is dominated by a few persons (docs/secure-execution.md §3):

* **Contributors.** Each aggregate names the sets of persons its value
  depends on (:func:`contributor_conditions`): the persons for whom its FILTER
  holds and its argument is not NULL; an argument is split into the terms of
  its sum and the branches of its CASEs, and each term counts the persons for
  whom it is not zero.  Every such set must hold at least k persons — zero
  included, so that suppression itself tells nothing.
* **Dominance.** The per-person contributions to every sum of a measure pass
  a conservative test from power sums (:class:`DominanceTest`).
* **Secondary suppression.** In every line of the grid (the whole grid, and
  each one-dimensional margin) the suppressed cells together hold at least k
  persons, or else the smallest released cell of the line is suppressed too
  (:func:`margin_lines`, :func:`secondary_suppression`).

MIN/MAX of a measure are refused: an extreme is one person's exact value.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Dominance, Role
from sqlmpc.sql.positions import node_position

MAX_TERMS = 32          # contributor sets per aggregate argument (terms × CASE branches)
LINEAR = (exp.Paren, exp.Add, exp.Sub, exp.Neg, exp.Mul, exp.Div, exp.Case, exp.If, exp.Coalesce,
          exp.Column, exp.Literal, exp.Null, exp.Boolean)


@dataclass(frozen=True)
class DominanceTest:
    """Released when C · S2 ≤ S1², where S1 = Σ c and S2 = Σ c² over the persons' contributions c.

    Cauchy–Schwarz bounds the n largest contributions by √(n·S2), so
    * the (n, p) rule (the n largest make up at most p % of the sum) holds when n·S2 ≤ (p/100)²·S1²;
    * the p % rule (the rest of the sum shields the largest by p %) holds when S1 ≥ (√2 + p/100)·√S2.
    ``C`` is the rule's constant, rounded up so that the test stays conservative.
    """

    constant: Fraction

    @classmethod
    def of(cls, rule: Dominance) -> "DominanceTest":
        if rule.kind == "p":
            c = (math.sqrt(2) + rule.percent / 100) ** 2
            return cls(Fraction(math.ceil(c * 10 ** 9), 10 ** 9))
        return cls(Fraction(rule.n) / (Fraction(rule.percent).limit_denominator(10 ** 6) / 100) ** 2)

    def passes(self, s1, s2) -> bool:
        return self.constant * s2 <= s1 * s1


# -- contributors -------------------------------------------------------------


def contributor_conditions(node: exp.Expression, q) -> list[exp.Expression]:
    """The sets of persons an aggregate's value depends on, as conditions on a row (FILTER apart).

    ``TRUE`` stands for every row (of the FILTER, if any).
    """
    if isinstance(node, exp.Count):
        arg = node.this
        if arg is None or isinstance(arg, exp.Star):
            return [exp.true()]
        if isinstance(arg, exp.Distinct):
            arg = arg.expressions[0]
        return [exp.Not(this=exp.Is(this=arg.copy(), expression=exp.null()))]
    if isinstance(node, (exp.Min, exp.Max)):
        return [exp.Not(this=exp.Is(this=node.this.copy(), expression=exp.null()))]
    args = [a for a in (node.this, node.args.get("expression")) if isinstance(a, exp.Expression)]
    both = [exp.Not(this=exp.Is(this=a.copy(), expression=exp.null())) for a in args] if len(args) > 1 else []
    out: dict[str, exp.Expression] = {}
    for arg in args:
        for conds, factors in _terms(arg, q):
            tests = list(conds) + [exp.NEQ(this=f.copy(), expression=exp.Literal.number(0)) for f in factors]
            tests += [t.copy() for t in both]
            cond = exp.and_(*[t.copy() for t in tests]) if tests else exp.true()
            out.setdefault(cond.sql(), cond)
    return list(out.values())


def _terms(node: exp.Expression, q) -> list[tuple[list[exp.Expression], list[exp.Expression]]]:
    """The argument as a sum of terms: (branch conditions, factors) — a term is Π factors where all hold."""
    if isinstance(node, exp.Paren):
        return _terms(node.this, q)
    if isinstance(node, (exp.Null,)):
        return []
    if isinstance(node, (exp.Literal, exp.Boolean)):
        return [([], [])]
    if isinstance(node, exp.Column):
        return [([], [node])]
    if isinstance(node, (exp.Add, exp.Sub)):
        return _cap(_terms(node.this, q) + _terms(node.expression, q), node, q)
    if isinstance(node, exp.Neg):
        return _terms(node.this, q)
    if isinstance(node, exp.Div) and _is_constant(node.expression):
        return _terms(node.this, q)
    if isinstance(node, exp.Mul):
        left, right = _terms(node.this, q), _terms(node.expression, q)
        _cap(left + right, node, q, product=len(left) * len(right))
        return [(a + c, b + d) for (a, b), (c, d) in itertools.product(left, right)]
    if isinstance(node, (exp.Case, exp.If, exp.Coalesce)):
        out = []
        for cond, value in _branches(node):
            out += [([cond] + c, f) for c, f in _terms(value, q)]
        return _cap(out, node, q)
    raise _refusal(node, q)


def _branches(node: exp.Expression) -> list[tuple[exp.Expression, exp.Expression]]:
    """(the condition under which a branch is taken, its value) for CASE, IF and COALESCE."""
    if isinstance(node, exp.Coalesce):
        values = [node.this] + list(node.expressions)
        out = []
        for i, v in enumerate(values):
            taken = [exp.Is(this=u.copy(), expression=exp.null()) for u in values[:i]]
            if i < len(values) - 1:
                taken.append(exp.Not(this=exp.Is(this=v.copy(), expression=exp.null())))
            out.append((exp.and_(*taken) if taken else exp.true(), v))
        return out
    if isinstance(node, exp.If):
        ifs, default = [node], node.args.get("false")
    else:
        ifs, default = node.args.get("ifs", []), node.args.get("default")
        if node.this is not None:        # CASE x WHEN v THEN ...: conditions x = v
            ifs = [exp.If(this=exp.EQ(this=node.this.copy(), expression=i.this.copy()), true=i.args["true"])
                   for i in ifs]
    out = []
    for i, branch in enumerate(ifs + [None]):
        value = default if branch is None else branch.args["true"]
        if value is None:
            continue
        # Taken when this condition is true and no earlier one is (a NULL condition is not true).
        earlier = [exp.If(this=b.this.copy(), true=exp.false()) for b in ifs[:i]]
        if branch is None:
            taken = exp.Case(ifs=earlier, default=exp.true()) if earlier else exp.true()
        else:
            taken = exp.Case(ifs=earlier + [exp.If(this=branch.this.copy(), true=exp.true())], default=exp.false())
        out.append((taken, value))
    return out


def _is_constant(node: exp.Expression) -> bool:
    return not any(True for _ in node.find_all(exp.Column))


def _cap(terms: list, node: exp.Expression, q, product: int = 0) -> list:
    if max(len(terms), product) > MAX_TERMS:
        raise errors.AggregateArgumentPolicyError(
            f"the aggregate argument {node.sql()} splits into more than {MAX_TERMS} terms and branches, "
            "each of which sqlmpc must count persons for", sql=q.sql, **node_position(node),
            hint="simplify the expression, or split it into several aggregates")
    return terms


def _refusal(node: exp.Expression, q) -> errors.PolicyError:
    return errors.AggregateArgumentPolicyError(
        f"{node.sql()} inside an aggregate selects persons by their values in a way sqlmpc cannot count "
        "contributors for", sql=q.sql, **node_position(node),
        hint="inside aggregates use + - * / and CASE WHEN ... THEN ... (each branch's persons are counted); "
             "functions of columns belong in WHERE, FILTER or CASE conditions")


def extreme_values(node: exp.Expression, q) -> list:
    """MIN/MAX: the values of its dimension, from the extreme end (the first one held is the result).

    MIN/MAX of a measure would release one person's exact value: refused, naming alternatives.
    Of a dimension the value is released only where at least k persons hold it, so that it
    describes a group, not a person; that needs the dimension's domain, so only a column will do.
    """
    name, arg = type(node).__name__.upper(), node.this
    measures = [c for c in arg.find_all(exp.Column) if q.column_of(c).role is Role.MEASURE]
    if measures:
        raise errors.OrderStatisticPolicyError(
            f"{name}({arg.sql()}) would release one person's exact value", sql=q.sql,
            column_name=measures[0].name, **node_position(node),
            hint=f"ask for AVG({arg.sql()}) or STDDEV_SAMP(...), or for how many persons lie above a "
                 f"threshold: COUNT(*) FILTER (WHERE {arg.sql()} > ...)")
    domain = q.column_of(arg).domain if isinstance(arg, exp.Column) else None
    if not domain:
        raise errors.OrderStatisticPolicyError(
            f"{name}({arg.sql()}) needs a dimension column with a declared domain", sql=q.sql,
            **node_position(node), hint="take MIN/MAX of a dimension column itself, e.g. MIN(b.income_decile)")
    values = sorted(v for v in domain if v is not None)
    return values if isinstance(node, exp.Min) else values[::-1]


def has_measure(node: exp.Expression, q) -> bool:
    return any(q.column_of(c).role is Role.MEASURE for c in node.find_all(exp.Column))


# -- secondary suppression -------------------------------------------------------


def margin_lines(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Sets of cells (flat indices, grid order) whose total an analyst can ask for: the whole grid
    and, for two or more dimensions, every one-dimensional margin line."""
    size = math.prod(shape)
    lines = [tuple(range(size))] if size > 1 else []
    if len(shape) > 1:
        index = list(itertools.product(*(range(n) for n in shape)))
        for d in range(len(shape)):
            by_rest: dict[tuple, list[int]] = {}
            for flat, combo in enumerate(index):
                by_rest.setdefault(combo[:d] + combo[d + 1:], []).append(flat)
            lines += [tuple(cells) for cells in by_rest.values() if len(cells) > 1]
    return lines


def secondary_suppression(released: list[bool], lines):
    """Suppress more cells until no line's suppressed cells hold fewer than k persons.

    A generator, so that the oracle (plaintext) and the engine (secure) run the same steps:
    it yields ``("small", lines)`` and is sent, for each line, whether its suppressed cells
    together are too small; it yields ``("smallest", lines)`` and is sent, for each line, the
    released cell with fewest persons (ties: the lowest index).  It returns the final flags.
    """
    released = list(released)
    while True:
        open_lines = [line for line in lines
                      if any(not released[c] for c in line) and any(released[c] for c in line)]
        if not open_lines:
            return released
        flags = yield "small", open_lines, released
        needy = [line for line, flag in zip(open_lines, flags) if flag]
        if not needy:
            return released
        cells = yield "smallest", needy, released
        for cell in cells:
            released[cell] = False


def run_steps(steps, answer):
    """Drive a :func:`secondary_suppression` generator with a plain function ``answer(kind, lines, released)``."""
    try:
        request = next(steps)
        while True:
            request = steps.send(answer(*request))
    except StopIteration as done:
        return done.value
