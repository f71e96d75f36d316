"""The secure part of a plan, run by every party in the same MPyC session (SPMD).

Each party brings only its own local results; every other array it handles
is a secret share.  Vectorised throughout: one secure array per column,
never a Python loop per row.

Steps (join mode): input → shuffle by resharing → PRF tokens → join in the
clear on tokens → gather by public indices → row flags and cell indicators
→ moments per cell (one matrix product) → threshold → HAVING → reveal.
Local mode skips the row steps: owners pre-aggregated per cell.
"""

from __future__ import annotations

import itertools
import time
import secrets
from dataclasses import dataclass
from fractions import Fraction

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.mpc.prf import residue_tokens, token_bits, token_field
from sqlmpc.mpc.reveal import current_ledger, reveal, reveal_ratio
from sqlmpc.mpc.shuffle import shuffle
from sqlmpc.plan.plan import LocalColumn, LocalPart, Plan
from sqlmpc.plan.planner import ROWS_PER_KEY
from sqlmpc.plan.release import margin_lines, secondary_suppression


@dataclass
class Frac:
    """A per-cell rational num/den; num and den are secure arrays or public ints; bounds on |.|."""

    num: object
    den: object
    bnum: int
    bden: int


class Engine:
    def __init__(self, mpc, plan: Plan, party_index: dict[str, int], me: str,
                 local: dict[tuple[str, int], pa.Table], progress=None):
        self.mpc = mpc
        self.plan = plan
        self.index = party_index
        self.me = me
        self.local = local            # (relation, part) -> this party's local result
        self.report = progress or (lambda stage: None)
        self.timings: dict[str, float] = {}
        self._stage = None

    def progress(self, stage: str) -> None:
        """Enter a stage (input, shuffle, join, aggregate, threshold, reveal): report it and time it."""
        now = time.perf_counter()
        if self._stage is not None:
            name, started = self._stage
            self.timings[name] = self.timings.get(name, 0.0) + now - started
        self._stage = (stage, now) if stage else None
        if stage:
            self.report(stage)

    # -- input -------------------------------------------------------------

    async def sizes(self) -> dict[tuple[str, int], int]:
        """Every party learns the padded size of every local result (declared leakage: input sizes).

        In join mode each local result is padded with dummy rows to the next size of a
        geometric series (:func:`padded_size`), so that a size tells at most its bucket;
        in local mode every input is the grid.
        """
        G = self.plan.grid.size
        mine = {f"{r}/{i}": G if self.plan.mode == "local" else padded_size(t.num_rows)
                for (r, i), t in self.local.items()}
        everyone = await self.mpc.transfer(mine)
        current_ledger().record("input sizes", len(self.plan.parts), "padded rows of each local result")
        sizes = {}
        for d in everyone:
            for key, n in d.items():
                r, i = key.rsplit("/", 1)
                sizes[(r, int(i))] = int(n)
        return sizes

    def input_matrix(self, part: LocalPart, n: int, width: int, values: np.ndarray | None, sectype=None):
        """Secret-share the owner's integer matrix (n x width); the others pass zeros of that shape."""
        owner = self.index[part.party]
        if n == 0 or width == 0:
            return None
        data = values if self.mpc.pid == owner else np.zeros((n, width), dtype=object)
        return self.mpc.input((sectype or self.secint).array(data), senders=owner)

    # -- local mode ----------------------------------------------------------

    async def run_local_mode(self, sizes) -> dict[str, object]:
        G = self.plan.grid.size
        names = [m.name for m in self.plan.moments]
        totals = None
        self.progress("input")
        for part in self.plan.parts:
            values = None
            if part.party == self.me:
                t = self.local[(part.relation, part.part)]
                values = np.zeros((G, len(names)), dtype=object)
                cells = t.column("cell").to_pylist()
                for j, name in enumerate(names):
                    values[cells, j] = [int(v) for v in t.column(name).to_pylist()]
            x = self.input_matrix(part, G, len(names), values)
            totals = x if totals is None else totals + x      # the parts' persons are disjoint: totals add up
        return {name: totals[:, j] for j, name in enumerate(names)}

    # -- join mode -------------------------------------------------------------

    async def run_join_mode(self, sizes) -> dict[str, object]:
        plan = self.plan
        self.progress("input")
        keyfield = token_field()
        matrices, keymats, layouts = {}, {}, {}
        for rel in plan.relations:
            parts = plan.parts_of(rel)
            layout = self.layout(parts[0])
            layouts[rel] = layout
            blocks, keyblocks = [], []
            for part in parts:
                n = sizes[(rel, part.part)]
                keys, values = self.encode(part, layout) if part.party == self.me else (None, None)
                x = self.input_matrix(part, n, layout["width"], values)
                kx = self.input_matrix(part, n, len(layout["keys"]), keys, keyfield)
                if x is not None:
                    blocks.append(x)
                if kx is not None:
                    keyblocks.append(kx)
            matrices[rel] = _stack(blocks)
            keymats[rel] = _stack(keyblocks)

        self.progress("shuffle")
        for rel, k in keymats.items():
            if k is not None and k.shape[0] > 1:
                x = matrices[rel]
                width = 0 if x is None else x.shape[1]
                cols = await shuffle([k[:, j] for j in range(k.shape[1])] + [x[:, j] for j in range(width)])
                keymats[rel] = self.stack_columns(cols[:k.shape[1]])
                if width:
                    matrices[rel] = self.stack_columns(cols[k.shape[1]:])

        self.progress("join")
        total = sum(k.shape[0] * k.shape[1] for k in keymats.values() if k is not None)
        bits = token_bits(max(total, 2))
        # One PRF key for every key column, so that tokens compare across relations.
        columns_ = [(rel, name, k[:, j]) for rel, k in keymats.items() if k is not None
                    for j, name in enumerate(layouts[rel]["keys"])]
        opened = await residue_tokens([c for _, _, c in columns_], bits=bits) if columns_ else []
        tokens = {(rel, name): [] for rel in matrices for name in layouts[rel]["keys"]}
        for (rel, name, _), toks in zip(columns_, opened):
            tokens[(rel, name)] = [int(t) for t in toks]
        index, matched = self.join_in_clear(tokens, {r: 0 if k is None else k.shape[0] for r, k in keymats.items()})
        n = len(next(iter(index.values()))) if index else 0
        if n == 0:
            return self.empty_moments(), 1

        # Gather the joined rows; a LEFT JOIN row without match gets the columns' "absent" values.
        columns: dict[tuple[str, str], object] = {}
        onehots: dict[str, object] = {}
        for rel in plan.relations:
            x, layout = matrices[rel], layouts[rel]
            idx = np.array([i if i is not None else 0 for i in index[rel]], dtype=np.int64)
            hit = np.array(matched[rel], dtype=np.int64)
            if x is None:
                rows = None
            else:
                rows = x[idx]
            for name, (j, col) in layout["columns"].items():
                absent = np.full(n, col.absent, dtype=object) * (1 - hit)
                if rows is None:
                    columns[(rel, name)] = self.secint.array(absent.astype(object))
                else:
                    columns[(rel, name)] = rows[:, j] * hit.astype(object) + absent.astype(object) \
                        if not hit.all() else rows[:, j]
            if layout["cells"] > 1:
                width = layout["cells"]
                lo = layout["onehot"]
                block = rows[:, lo:lo + width] if rows is not None else None
                absent_onehot = np.zeros((n, width), dtype=object)
                absent_onehot[hit == 0, layout["absent_cell"]] = 1
                if block is None:
                    onehots[rel] = self.secint.array(absent_onehot)
                elif hit.all():
                    onehots[rel] = block
                else:
                    onehots[rel] = block * hit.reshape(n, 1).astype(object) + absent_onehot
        self.progress("aggregate")
        weight = None
        if plan.row_filter is not None:
            weight = self.row_expr(plan.row_filter, columns, n)
        E = self.cell_indicators(onehots, n)             # n x G in grid order (public ones if G == 1)
        if (plan.relations[0], REAL.name) in columns:   # the root's padding rows are in no cell
            E = E * columns[(plan.relations[0], REAL.name)].reshape(n, 1)
        if weight is not None:
            E = E * weight.reshape(n, 1)
        moments = {}
        sums = [m for m in plan.moments if m.kind == "sum"]
        if sums:
            V = self.stack_columns([self.row_expr(m.expr, columns, n) for m in sums])
            S = np.transpose(E) @ V                        # G x A: the only wide step, one reshare per output
            for j, m in enumerate(sums):
                moments[m.name] = S[:, j]
        person_keys = tokens[(plan.relations[0], f"key_{plan.relations[0]}")]
        root_rows = [person_keys[i] for i in index[plan.relations[0]]]   # the root is never NULL
        # Pre-aggregated per key and cell, a person has at most one row in a cell.
        rows_of = None if self.one_row_per_person_and_cell() else person_rows(root_rows)
        G = E.shape[1]

        def weighted(ms):
            return np.hstack([E if isinstance(m.expr, exp.Literal) and m.kind == "persons"
                              else E * self.row_expr(m.expr, columns, n).reshape(n, 1) for m in ms])

        counted = [m for m in plan.moments if m.kind == "persons"]
        if counted:                       # all persons moments in one pass: one round per row depth
            X = weighted(counted)
            totals = np.sum(X, axis=0) if rows_of is None else self.distinct_persons(X, rows_of)
            for j, m in enumerate(counted):
                moments[m.name] = totals[j * G:(j + 1) * G]
        squared = [m for m in plan.moments if m.kind == "sum2"]
        if squared:                       # Σ over persons of (the person's total in the cell)²
            X = weighted(squared)
            C = X if rows_of is None else self.per_person(X, rows_of, lambda acc, x: acc + x)
            totals = np.sum(C * C, axis=0)
            for j, m in enumerate(squared):
                moments[m.name] = totals[j * G:(j + 1) * G]
        return moments, n

    def one_row_per_person_and_cell(self) -> bool:
        """Pre-aggregated per key and cell by one owner each: no person repeats within a cell."""
        return self.plan.per_key and all(len(self.plan.parts_of(r)) == 1 for r in self.plan.relations)

    def layout(self, part: LocalPart) -> dict:
        """Column positions of a relation's input matrix: one-hot cells, values and flags (keys apart)."""
        keys = [c.name for c in part.columns if c.kind == "key"]
        cells = part.column("cell")
        columns, pos = {}, (cells.bound if cells.bound > 1 else 0)
        local = [c for c in part.columns if c.kind in ("value", "flag")]
        if part.relation == self.plan.relations[0] and cells.bound <= 1 and self.dummies_reach_cells():
            local.append(REAL)          # no one-hot to zero the padding's rows: a flag does
        for c in local:
            columns[c.name] = (pos, c)
            pos += 1
        return {"width": pos, "keys": keys, "onehot": 0, "cells": cells.bound,
                "absent_cell": cells.absent, "columns": columns}

    def encode(self, part: LocalPart, layout: dict) -> tuple[np.ndarray, np.ndarray]:
        """This party's local result as integer matrices: keys (for tokens) and values.

        Padded to :func:`padded_size` with dummy rows: a fresh random key (it matches nothing),
        no cell, zero values and flags.
        """
        t = self.local[(part.relation, part.part)]
        real, n = t.num_rows, padded_size(t.num_rows)
        keys = np.zeros((n, len(layout["keys"])), dtype=object)
        for j, name in enumerate(layout["keys"]):
            # A missing key (LEFT JOIN inside the party) becomes a fresh random value: it matches nothing.
            keys[:, j] = [int(k) if k is not None else secrets.randbits(64) + 2 ** 64
                          for k in t.column(name).to_pylist()] + \
                         [secrets.randbits(64) + 2 ** 64 for _ in range(n - real)]
        out = np.zeros((n, layout["width"]), dtype=object)
        if layout["cells"] > 1:
            codes = np.array(t.column("cell").to_pylist(), dtype=np.int64)
            inside = codes >= 0
            out[np.nonzero(inside)[0], layout["onehot"] + codes[inside]] = 1
        for name, (j, _) in layout["columns"].items():
            out[:real, j] = 1 if name == REAL.name else [int(v) for v in t.column(name).to_pylist()]
        return keys, out

    def dummies_reach_cells(self) -> bool:
        """Whether the root's padding rows survive the join: only when no join is INNER
        (an inner join drops them, as their random keys match nothing)."""
        return self.plan.mode == "join" and all(j.kind == "left" for j in self.plan.joins)

    def stack_columns(self, cols):
        return np.stack(cols, axis=1)

    def join_in_clear(self, tokens: dict[tuple[str, str], list[int]], sizes: dict[str, int]):
        """Run the query's join structure on public tokens: the row indices of each relation."""
        con = duckdb.connect()
        rels = self.plan.relations
        for rel in rels:
            data = {"i": pa.array(range(sizes[rel]), pa.int64())}
            for (r, name), toks in tokens.items():
                if r == rel:
                    data[name] = pa.array([str(t) for t in toks], pa.string())
            con.register(f"t_{rel}", pa.table(data))
        sql = exp.select(*[exp.alias_(exp.column("i", table=r), f"i_{r}") for r in rels]).from_(
            exp.to_table(f"t_{rels[0]}").as_(rels[0]))
        for j in self.plan.joins:
            on = exp.and_(*[exp.EQ(this=exp.column(f"key_{a[1]}", table=a[0]),
                                   expression=exp.column(f"key_{b[1]}", table=b[0])) for a, b in j.pairs])
            sql = sql.join(exp.to_table(f"t_{j.relation}").as_(j.relation), on=on,
                           join_type="LEFT" if j.kind == "left" else "INNER")
        sql = sql.order_by(*[f"i_{r}" for r in rels])
        rows = con.execute(sql.sql("duckdb")).fetchall()
        index = {r: [row[i] for row in rows] for i, r in enumerate(rels)}
        matched = {r: [v is not None for v in index[r]] for r in rels}
        return index, matched

    def cell_indicators(self, onehots: dict[str, object], n: int):
        """Row-wise Kronecker product of the relations' one-hots, columns in grid order."""
        plan = self.plan
        if not onehots:
            return self.secint.array(np.ones((n, 1), dtype=object))
        E, sizes = None, []
        for rel in plan.cell_relations:
            block = onehots[rel]
            sizes.append(block.shape[1])
            E = block if E is None else (E.reshape(n, -1, 1) * block.reshape(n, 1, -1)).reshape(n, -1)
        return E[:, self.grid_permutation(sizes)] if len(sizes) > 1 else E

    def grid_permutation(self, sizes) -> np.ndarray:
        """For each grid cell (GROUP BY order), its column in relation-major Kronecker order."""
        groups = self.plan.grid.groups
        order = []
        for combo in itertools.product(*(range(len(g.domain)) for g in groups)):
            flat = 0
            for rel, size in zip(self.plan.cell_relations, sizes):
                code = 0
                for g, v in zip(groups, combo):
                    if g.relation == rel:
                        code = code * len(g.domain) + v
                flat = flat * size + code
            order.append(flat)
        return np.array(order, dtype=np.int64)

    def distinct_persons(self, X, rows_of: np.ndarray):
        """Per column, how many distinct persons have a row in it: Σ_person (1 − Π_rows (1 − x))."""
        return np.sum(1 - self.per_person(1 - X, rows_of, lambda acc, x: acc * x, pad=1), axis=0)

    def per_person(self, X, rows_of: np.ndarray, combine, pad: int = 0):
        """Combine each person's rows of X (persons × columns); the r-th rows of all persons at once.

        ``rows_of`` (from :func:`person_rows`) lists each person's rows by depth; a person with
        fewer rows is padded with the row index n, a row of ``pad`` values.
        """
        n, width = X.shape
        padded = np.vstack((X, self.secint.array(np.full((1, width), pad, dtype=object))))
        out = padded[rows_of[0]]
        for r in range(1, rows_of.shape[0]):
            out = combine(out, padded[rows_of[r]])
        return out

    def row_expr(self, node: exp.Expression, columns, n: int):
        """Evaluate a secure row expression (columns are ``rel.local_name``) on the joined rows."""
        mpc = self.mpc
        if isinstance(node, exp.Paren):
            return self.row_expr(node.this, columns, n)
        if isinstance(node, exp.Column):
            return columns[(node.table, node.name)]
        if isinstance(node, exp.Literal):
            return self.secint.array(np.full(n, int(node.this), dtype=object))
        if isinstance(node, exp.Boolean):
            return self.secint.array(np.full(n, int(node.this), dtype=object))
        if isinstance(node, exp.Neg):
            return -self.row_expr(node.this, columns, n)
        if isinstance(node, exp.Not):
            return 1 - self.row_expr(node.this, columns, n)
        a = self.row_expr(node.this, columns, n)
        b = self.row_expr(node.expression, columns, n)
        if isinstance(node, exp.Add):
            return a + b
        if isinstance(node, exp.Sub):
            return a - b
        if isinstance(node, (exp.Mul, exp.And)):
            return a * b
        if isinstance(node, exp.Or):
            return a + b - a * b
        if isinstance(node, exp.EQ):
            return mpc.np_equal(a, b) if hasattr(mpc, "np_equal") else mpc.eq(a, b)
        if isinstance(node, exp.NEQ):
            return 1 - mpc.np_equal(a, b)
        if isinstance(node, exp.LT):
            return mpc.np_less(a, b)
        if isinstance(node, exp.GT):
            return mpc.np_less(b, a)
        if isinstance(node, exp.LTE):
            return 1 - mpc.np_less(b, a)
        if isinstance(node, exp.GTE):
            return 1 - mpc.np_less(a, b)
        raise errors.NotSupportedError(f"secure operator {type(node).__name__}")

    def empty_moments(self):
        G = self.plan.grid.size
        zero = self.secint.array(np.zeros(G, dtype=object))
        return {m.name: zero for m in self.plan.moments}

    # -- per cell ----------------------------------------------------------------

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
        having = [None] * G
        if plan.having is not None and len(released):
            flags = await self.having(plan.having, {m: v[released] for m, v in moments.items()}, bounds)
            for i, h in zip(released, flags):
                having[i] = bool(h)
            released = np.array([i for i in released if having[i]], dtype=np.int64)
        self.progress("reveal")
        outputs = []
        for j, formula in enumerate(plan.outputs):
            col = [None] * G
            if len(released):
                values = await self.reveal_output(formula, {m: v[released] for m, v in moments.items()}, bounds)
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
        return pa.table(data)

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

    # -- driver ------------------------------------------------------------------

    async def run(self) -> pa.Table:
        sizes = await self.sizes()
        # Row phase: the field holds 64-bit key hashes and every moment (a sum over at most
        # `rows` rows).  Cell phase: exact ratios need more room; moments are converted then.
        rows = self.row_bound(sizes)
        row_bits = max(66, (rows * self.max_expr_bound()).bit_length() + 2,
                       max(self.moment_bounds(rows).values(), default=1).bit_length() + 2)
        self.secint = self.mpc.SecInt(row_bits)
        if self.plan.mode == "local":
            moments = await self.run_local_mode(sizes)
        else:
            moments, rows = await self.run_join_mode(sizes)
        bounds = self.moment_bounds(rows)
        cell_bits = self.cell_bits(bounds)
        if cell_bits > row_bits:
            big = self.mpc.SecInt(cell_bits)
            moments = {name: self.convert(v, big) for name, v in moments.items()}
            self.secint = big
        cells = await self.release(moments, bounds)
        self.progress("")
        return cells

    def convert(self, x, sectype):
        values = self.mpc.convert([x[i] for i in range(x.shape[0])], sectype)
        return self.mpc.np_fromlist(values)

    def row_bound(self, sizes) -> int:
        """An upper bound on the rows a moment sums over, known before any input."""
        if self.plan.mode == "local":
            return MAX_ROWS
        per_relation = [max(1, sum(n for (r, _), n in sizes.items() if r == rel)) for rel in self.plan.relations]
        return int(np.prod(per_relation, dtype=object))

    def max_expr_bound(self) -> int:
        locals_ = {(p.relation, c.name): c for p in self.plan.parts for c in p.columns}
        return max([_expr_bound(m.expr, locals_) for m in self.plan.moments] + [1])

    def moment_bounds(self, rows: int) -> dict[str, int]:
        """|moment| ≤ rows × bound of its row expression: sets the field size for exact ratios."""
        locals_ = {(p.relation, c.name): c for p in self.plan.parts for c in p.columns}
        rows = max(1, rows)
        out = {}
        for m in self.plan.moments:
            e = _expr_bound(m.expr, locals_)
            if m.kind != "sum2":
                out[m.name] = rows * e
            elif self.plan.mode == "join" and self.one_row_per_person_and_cell():
                out[m.name] = rows * e * e                   # each person's contribution is one row: |c| ≤ e
            else:                                            # Σ c² ≤ Σ|c| · max|c|, one person's rows ≤ ROWS_PER_KEY
                out[m.name] = rows * e * e * (ROWS_PER_KEY if self.plan.mode == "local" else rows)
        return out

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


MAX_ROWS = 2 ** 40     # declared maximum of rows per party in local mode (sets bit lengths)
MAX_VALUE = 10 ** 18   # bound of a column whose bound the plan does not state
PAD_FLOOR = 128        # every local result in join mode has at least this many rows ...
PAD_GROWTH = (5, 4)    # ... and otherwise the next size of the series ×1.25 above it
REAL = LocalColumn("real_", "flag", 0, 1, 0)   # 1 on a party's real rows, 0 on its padding


def padded_size(n: int) -> int:
    """The public size a local result of n rows is padded to: at most 25 % more rows."""
    size = PAD_FLOOR
    while size < n:
        size = -(-size * PAD_GROWTH[0] // PAD_GROWTH[1])
    return size


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
        yield exp.Mul(this=node.this, expression=node.this)
        yield node.expression.this
    elif isinstance(node, (exp.And, exp.Or)):
        yield from _ratio_parts(node.this)
        yield from _ratio_parts(node.expression)
    elif isinstance(node, (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.NEQ)):
        yield exp.Mul(this=node.this, expression=exp.Mul(this=node.expression, expression=node.expression))
    else:
        yield node


def person_rows(persons: list) -> np.ndarray | None:
    """The joined rows of each person (public tokens) by depth: depth × persons, padded with n;
    None when every row is a different person."""
    n = len(persons)
    first: dict = {}
    rows: list[list[int]] = []
    for i, p in enumerate(persons):
        if p not in first:
            first[p] = len(rows)
            rows.append([])
        rows[first[p]].append(i)
    if len(rows) == n:
        return None
    index = np.full((max(len(r) for r in rows), len(rows)), n, dtype=np.int64)
    for j, r in enumerate(rows):
        index[:len(r), j] = r
    return index


def _stack(blocks: list):
    """Rows of several parts (UNION ALL branches) as one secure matrix."""
    if not blocks:
        return None
    return blocks[0] if len(blocks) == 1 else np.vstack(blocks)


def _expr_bound(node, locals_) -> int:
    if isinstance(node, exp.Paren):
        return _expr_bound(node.this, locals_)
    if isinstance(node, exp.Column):
        col = locals_.get((node.table, node.name))
        return col.bound if col is not None else MAX_VALUE
    if isinstance(node, (exp.Literal,)):
        return abs(int(Fraction(node.this))) + 1
    if isinstance(node, exp.Mul):
        return _expr_bound(node.this, locals_) * _expr_bound(node.expression, locals_)
    if isinstance(node, (exp.Add, exp.Sub)):
        return _expr_bound(node.this, locals_) + _expr_bound(node.expression, locals_)
    return 1


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
        import decimal
        return pa.array([None if v is None else decimal.Decimal(v) for v in values], pa.decimal128(38, 0))
    return pa.array([None if v is None else float(v) for v in values], pa.float64())
