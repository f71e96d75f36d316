"""The cell phase: moments per cell in, released cells out.

The release rules of :mod:`sqlmpc.plan.release` as secure comparisons (all cells
at once), secondary suppression on secret counts, HAVING, and the outputs as
exact ratios — every opening through the reveal gateway.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.mpc.perturb import perturb_moments
from sqlmpc.mpc.reveal import reveal, reveal_ratio
from sqlmpc.plan.perturbation import perturbed_metadata
from sqlmpc.plan.release import margin_lines, secondary_suppression


@dataclass
class Frac:
    """A per-cell rational num/den; num and den are secure arrays or public ints; bounds on |.|."""

    num: object
    den: object
    bnum: int
    bden: int



class CellPhase:
    """The engine's cell phase (a mixin of :class:`sqlmpc.mpc.engine.Engine`)."""

    def formula(self, node: exp.Expression, moments, bounds) -> Frac:
        """A per-cell rational function of the moments (exact)."""
        if isinstance(node, exp.Paren):
            return self.formula(node.this, moments, bounds)
        if isinstance(node, exp.Column) and node.table == "M":
            return Frac(moments[node.name], 1, bounds[node.name], 1)
        if isinstance(node, exp.Literal):
            value = Fraction(node.this)
            return Frac(value.numerator, value.denominator, abs(value.numerator), value.denominator)
        if isinstance(node, exp.Neg):
            f = self.formula(node.this, moments, bounds)
            return Frac(-f.num, f.den, f.bnum, f.bden)
        a = self.formula(node.this, moments, bounds)
        b = self.formula(node.expression, moments, bounds)
        if isinstance(node, (exp.Add, exp.Sub)):
            sign = 1 if isinstance(node, exp.Add) else -1
            if _is_public(a.den) and _is_public(b.den) and a.den == b.den:
                return Frac(a.num + sign * b.num, a.den, a.bnum + b.bnum, a.bden)
            return Frac(a.num * b.den + sign * (b.num * a.den), a.den * b.den,
                        a.bnum * b.bden + b.bnum * a.bden, a.bden * b.bden)
        if isinstance(node, exp.Mul):
            return Frac(a.num * b.num, a.den * b.den, a.bnum * b.bnum, a.bden * b.bden)
        if isinstance(node, exp.Div):
            return Frac(a.num * b.den, a.den * b.num, a.bnum * b.bden, a.bden * b.bnum)
        raise errors.NotSupportedError(f"{node.sql()} in an aggregate output")

    async def release(self, moments: dict[str, object], bounds: dict[str, int]) -> pa.Table:
        plan = self.plan
        G = plan.grid.size
        self.progress("threshold")
        k = plan.min_cell_size
        self.counts = self.small_counts(moments, bounds)
        primary = [bool(v) for v in await reveal(self.rules_pass(moments), what="cells passing the release rules",
                                                 why=f"which cells meet every release rule (k={k})")]
        ok = await self.secondary(primary, moments)
        released = np.array([i for i in range(G) if ok[i]], dtype=np.int64)
        shown = {m: v[released] for m, v in moments.items()}
        if plan.perturbation is not None and len(released):
            # HAVING and the outputs see perturbed values only: the exact ones are never opened.
            shown = await perturb_moments(self.mpc, plan.perturbation, shown, bounds)
        having = [None] * G
        if plan.having is not None and len(released):
            flags = await self.having(plan.having, shown, bounds)
            for i, h in zip(released, flags):
                having[i] = bool(h)
            kept = np.array([j for j, i in enumerate(released) if having[i]], dtype=np.int64)
            released = released[kept]
            shown = {m: v[kept] for m, v in shown.items()}
        self.progress("reveal")
        outputs = []
        for j, formula in enumerate(plan.outputs):
            col = [None] * G
            if len(released):
                values = await self.reveal_output(formula, shown, bounds)
                for i, v in zip(released, values):
                    col[i] = v
            outputs.append(col)
        cells = plan.grid.cells()
        data = {f"g{i}": pa.array([c[i] for c in cells]) for i in range(len(plan.grid.groups))}
        data["ok"] = pa.array(ok, pa.bool_())
        data["having"] = pa.array([h if plan.having is not None else (True if ok[i] else None)
                                   for i, h in enumerate(having)], pa.bool_())
        for j, col in enumerate(outputs):
            data[f"a{j}"] = _arrow_column(col)
        table = pa.table(data)
        if plan.perturbation is not None:
            table = table.replace_schema_metadata(perturbed_metadata(plan.perturbation, plan.outputs))
        return table

    def small_counts(self, moments, bounds) -> dict:
        """The persons counts in a secure type just wide enough for the release rules' comparisons.

        A comparison costs about one secure bit per bit of the type: counts (and sums of a line's
        counts, and the argmin keys count·G + cell) need far fewer bits than the exact ratios.
        """
        G = self.plan.grid.size
        names = [m.name for m in self.plan.moments if m.kind == "persons"]
        largest = max(bounds[n] for n in names)
        self.count_type = self.mpc.SecInt(max(32, ((largest + 1) * G * 2).bit_length() + 2))
        if self.count_type.bit_length >= self.secint.bit_length:
            self.count_type = self.secint
            return {n: moments[n] for n in names}
        stacked = self.convert(np.concatenate([moments[n] for n in names]), self.count_type)
        return {n: stacked[i * G:(i + 1) * G] for i, n in enumerate(names)}

    def rules_pass(self, moments):
        """Per cell, 1 where every guard of the plan holds (sqlmpc.plan.release); all compared at once.

        Counts are compared in the small count type, dominance (sums and squares) in the cell
        type; their flags are brought to the count type to be multiplied.
        """
        mpc, G, k = self.mpc, self.plan.grid.size, self.plan.min_cell_size
        counts = self.counts
        smaller, larger, checks, dominance = [], [], [], []

        def less(a, b) -> int:          # index of the comparison a < b among all count comparisons
            smaller.append(a)
            larger.append(self.count_type.array(np.full(G, b, dtype=object)))
            return len(smaller) - 1

        for g in self.plan.guards:
            if g.kind == "contributors":
                i = less(counts[g.moments[0]], k)
                checks.append(lambda f, i=i: 1 - f[i])
            elif g.kind == "dominance":  # C·S2 ≤ S1²  ⇔  NOT den·S1² < num·S2
                s1, s2 = (moments[m] for m in g.moments)
                dominance.append((s1 * s1 * g.constant.denominator, s2 * g.constant.numerator))
            else:                        # extreme: the first value anyone holds is held by ≥ k persons
                held = [(less(counts[m], 1), less(counts[m], k)) for m in g.moments]

                def check(f, held=held):
                    ok, none_before = 0, 1
                    for nobody, few in held:
                        ok = ok + none_before * (1 - f[few])
                        none_before = none_before * f[nobody]
                    return ok
                checks.append(check)
        fails = mpc.np_less(mpc.np_stack(smaller), mpc.np_stack(larger))
        ok = checks[0](fails)
        for check in checks[1:]:
            ok = ok * check(fails)
        if dominance:
            dominated = mpc.np_less(mpc.np_stack([a for a, _ in dominance]), mpc.np_stack([b for _, b in dominance]))
            passes = 1 - dominated[0]
            for i in range(1, len(dominance)):
                passes = passes * (1 - dominated[i])
            ok = ok * (passes if self.count_type is self.secint else self.convert(passes, self.count_type))
        return ok

    async def secondary(self, primary: list[bool], moments) -> list[bool]:
        """Secondary suppression (sqlmpc.plan.release): the same steps as the oracle, on secret counts."""
        plan, mpc = self.plan, self.mpc
        G, k = plan.grid.size, plan.min_cell_size
        counts = [self.counts[g.moments[0]] for g in plan.guards if g.kind == "contributors"]
        persons = counts[0]
        steps = secondary_suppression(primary, margin_lines(tuple(len(g.domain) for g in plan.grid.groups)))
        try:
            kind, lines, released = next(steps)
            while True:
                if kind == "small":
                    hidden = np.zeros((G, len(lines)), dtype=object)
                    for j, line in enumerate(lines):
                        hidden[[c for c in line if not released[c]], j] = 1
                    totals = mpc.np_stack([c @ hidden for c in counts])          # guards × lines
                    small = mpc.np_less(totals, self.count_type.array(np.full(totals.shape, k, dtype=object)))
                    none_small = 1 - small[0]
                    for i in range(1, len(counts)):
                        none_small = none_small * (1 - small[i])
                    answer = [not bool(v) for v in await reveal(
                        none_small, what="secondary suppression",
                        why="whether a line's suppressed cells together hold fewer than k persons")]
                else:
                    shown = [[c for c in line if released[c]] for line in lines]
                    smallest = [mpc.np_argmin(persons[np.array(cells, dtype=np.int64)] * G
                                              + np.array(cells, dtype=object)) for cells in shown]
                    opened = await reveal(smallest, what="secondary suppression",
                                          why="which released cell of each short line has the fewest persons")
                    answer = [cells[int(i)] for cells, i in zip(shown, opened)]
                kind, lines, released = steps.send(answer)
        except StopIteration as done:
            return done.value

    async def reveal_output(self, formula: exp.Expression, moments, bounds) -> list:
        if isinstance(formula, exp.Anonymous) and formula.name == "FIRST_HELD":
            return await self.first_held(formula, moments)
        if isinstance(formula, exp.Anonymous) and formula.name == "IF_UNDEFINED":
            inner, guard, value = formula.expressions
            values = await self.reveal_output(inner, moments, bounds)
            g = self.formula(guard, moments, bounds)
            defined = await self.ratio(Frac(g.num, g.num, g.bnum, g.bnum), "released values")
            fallback = float(value.this)
            return [v if v is not None else (None if d is None else fallback) for v, d in zip(values, defined)]
        if isinstance(formula, exp.Sqrt):
            inner = await self.reveal_output(formula.this, moments, bounds)
            return [None if v is None else float(v) ** 0.5 for v in inner]
        if isinstance(formula, exp.Div) and isinstance(formula.expression, exp.Sqrt):
            # CORR: num / sqrt(den) = sign(num) · sqrt(num² / den)
            num = self.formula(formula.this, moments, bounds)
            den = self.formula(formula.expression.this, moments, bounds)
            square = Frac(num.num * num.num * den.den, num.den * num.den * den.num,
                          num.bnum ** 2 * den.bden, num.bden ** 2 * den.bnum)
            ratio = await self.ratio(square, "released values")
            sign_secret = num.num * num.den if not _is_public(num.num) else None
            signs = await reveal(1 - self.mpc.np_less(sign_secret, 0) * 2, what="released values",
                                 why="sign of a correlation") if sign_secret is not None else None
            out = []
            for i, r in enumerate(ratio):
                out.append(None if r is None else (1 if signs is None else int(signs[i])) * float(r) ** 0.5)
            return out
        f = self.formula(formula, moments, bounds)
        values = await self.ratio(f, "released values")
        return [None if v is None else (int(v) if v.denominator == 1 else float(v)) for v in values]

    async def first_held(self, formula: exp.Expression, moments) -> list:
        """MIN/MAX of a dimension: the first of its values (from the extreme end) anyone holds."""
        counts, values = (t.expressions for t in formula.expressions)
        held = [moments[c.name] for c in counts]
        n = held[0].shape[0]
        if len(held) == 1:
            return [_literal_value(values[0])] * n
        nobody = self.mpc.np_less(self.mpc.np_stack(held), self.secint.array(np.ones((len(held), n), dtype=object)))
        # The number of values before the first one held: Σ_i Π_{u<i} nobody_u.
        none_before = nobody[0]
        index = none_before
        for i in range(1, len(held) - 1):
            none_before = none_before * nobody[i]
            index = index + none_before
        opened = await reveal(index, what="released values", why="the result: which value of the dimension is the extreme")
        return [_literal_value(values[int(i)]) for i in opened]

    async def ratio(self, f: Frac, what: str) -> list:
        num, den = f.num, f.den
        if _is_public(den) and not _is_public(num):
            opened = await reveal(num, what=what, why="the result")
            return [Fraction(int(v), int(den)) if den else None for v in opened]
        num = num if not _is_public(num) else self.cell_array(num, den)
        den = den if not _is_public(den) else self.cell_array(den, num)
        return await reveal_ratio(num, den, what=what, why="the result (an exact ratio)",
                                  bound=max(f.bnum, f.bden))

    def cell_array(self, value, like):
        return self.secint.array(np.full(like.shape[0], int(value), dtype=object))

    async def having(self, node: exp.Expression, moments, bounds) -> list:
        flag = self.condition(node, moments, bounds)
        return await reveal(flag, what="having", why="HAVING outcome of the released cells")

    def condition(self, node, moments, bounds):
        mpc = self.mpc
        if isinstance(node, exp.Paren):
            return self.condition(node.this, moments, bounds)
        if isinstance(node, exp.And):
            return self.condition(node.this, moments, bounds) * self.condition(node.expression, moments, bounds)
        if isinstance(node, exp.Or):
            a, b = self.condition(node.this, moments, bounds), self.condition(node.expression, moments, bounds)
            return a + b - a * b
        if isinstance(node, exp.Not):
            return 1 - self.condition(node.this, moments, bounds)
        a = self.formula(node.this, moments, bounds)
        b = self.formula(node.expression, moments, bounds)
        # a.num/a.den ? b.num/b.den  <=>  a.num·a.den·b.den² ? b.num·b.den·a.den²  (denominators squared ≥ 0)
        left = a.num * a.den * (b.den * b.den)
        right = b.num * b.den * (a.den * a.den)
        left = left if not _is_public(left) else self.cell_array(left, right)
        right = right if not _is_public(right) else self.cell_array(right, left)
        if isinstance(node, exp.GT):
            return mpc.np_less(right, left)
        if isinstance(node, exp.GTE):
            return 1 - mpc.np_less(left, right)
        if isinstance(node, exp.LT):
            return mpc.np_less(left, right)
        if isinstance(node, exp.LTE):
            return 1 - mpc.np_less(right, left)
        if isinstance(node, exp.EQ):
            return mpc.np_equal(left, right)
        if isinstance(node, exp.NEQ):
            return 1 - mpc.np_equal(left, right)
        raise errors.NotSupportedError(f"HAVING {node.sql()}")

    def cell_bits(self, bounds: dict[str, int]) -> int:
        """Bits for the cell phase: p > 2·B² for the largest numerator or denominator B of a ratio."""
        symbols = {name: _Secret() for name in bounds}      # as at run time: no denominator looks public
        largest = 1
        for node in list(self.plan.outputs) + ([self.plan.having] if self.plan.having is not None else []):
            for part in _ratio_parts(node):
                f = self.formula(part, symbols, bounds)
                largest = max(largest, f.bnum, f.bden)
        compared = max([g.constant.denominator * bounds[g.moments[0]] ** 2 + g.constant.numerator * bounds[g.moments[1]]
                        for g in self.plan.guards if g.kind == "dominance"] + [1])
        return max((2 * largest * largest).bit_length(), compared.bit_length() + 1) + 2


def _ratio_parts(node: exp.Expression):
    """The rational sub-formulas the release opens, with squares where a square root follows."""
    if isinstance(node, exp.Anonymous) and node.name == "FIRST_HELD":
        return                                   # opens an index into public values, not a ratio
    if isinstance(node, exp.Anonymous) and node.name == "IF_UNDEFINED":
        yield from _ratio_parts(node.expressions[0])
        yield node.expressions[1]
    elif isinstance(node, exp.Sqrt):
        yield from _ratio_parts(node.this)
    elif isinstance(node, exp.Div) and isinstance(node.expression, exp.Sqrt):
        # CORR opens num² / den as one fraction (reveal_output): its bounds are products of both
        yield exp.Div(this=exp.Mul(this=node.this, expression=node.this), expression=node.expression.this)
    elif isinstance(node, (exp.Paren, exp.Not)):         # HAVING (a OR b), NOT a
        yield from _ratio_parts(node.this)
    elif isinstance(node, (exp.And, exp.Or)):
        yield from _ratio_parts(node.this)
        yield from _ratio_parts(node.expression)
    elif isinstance(node, (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.NEQ)):
        yield exp.Mul(this=node.this, expression=exp.Mul(this=node.expression, expression=node.expression))
    else:
        yield node


class _Secret:
    """Stands for a secret per-cell value when only the bounds of a formula are wanted."""

    def _same(self, *_):
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __neg__ = _same


def _is_public(v) -> bool:
    return isinstance(v, (int, Fraction))


def _literal_value(node: exp.Expression):
    """The Python value of a domain literal (a DATE literal as its ISO text: the result's type casts it)."""
    node = node.this if isinstance(node, exp.Cast) else node
    if node.is_string:
        return node.this
    value = Fraction(node.this)
    return int(value) if value.denominator == 1 else float(value)


def _arrow_column(values: list) -> pa.Array:
    """Released values as Arrow: exact integers stay exact (int64, or decimal beyond it), else double."""
    present = [v for v in values if v is not None]
    if any(isinstance(v, str) for v in present):
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    if all(isinstance(v, int) for v in present):
        if all(-2**63 <= v < 2**63 for v in present):
            return pa.array(values, pa.int64())
        return pa.array([None if v is None else decimal.Decimal(v) for v in values], pa.decimal128(38, 0))
    return pa.array([None if v is None else float(v) for v in values], pa.float64())
