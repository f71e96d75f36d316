"""Join mode, the row phase: a relation's rows in, moments per cell out.

Input (padded to a size bucket) → shuffle by resharing → PRF tokens → the join
on public tokens in DuckDB → gather by public indices → row flags and cell
indicators (the row-wise Kronecker product of the relations' one-hots) → moments
per cell by one matrix product; distinct persons and per-person sums where a
person has several rows.
"""

from __future__ import annotations

import itertools
import secrets
from fractions import Fraction

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.mpc.prf import residue_tokens, token_bits, token_field
from sqlmpc.mpc.record_keys import load_share, party_state, record_keys
from sqlmpc.mpc.shuffle import shuffle
from sqlmpc.plan.plan import LocalColumn, LocalPart
from sqlmpc.sql.functions import arguments, scalar_of

MAX_VALUE = 10 ** 18   # bound of a column whose bound the plan does not state
PAD_FLOOR = 128        # every local result in join mode has at least this many rows ...
PAD_GROWTH = (5, 4)    # ... and otherwise the next size of the series ×1.25 above it
REAL = LocalColumn("real_", "flag", 0, 1, 0)   # 1 on a party's real rows, 0 on its padding
RECORD_KEY = "record_key_"     # the column of each root row's secret record key (perturbed plans)


class JoinMode:
    """The engine's row phase (a mixin of :class:`sqlmpc.mpc.engine.Engine`)."""

    async def run_join_mode(self, sizes) -> dict[str, object]:
        plan = self.plan
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

        # One relation of one owner, one row per person and cell (a perturbed query on one table):
        # nothing to join and no person to tell apart, so neither shuffle nor tokens are needed.
        alone = len(plan.relations) == 1 and self.one_row_per_person_and_cell()
        self.progress("shuffle")
        for rel, k in keymats.items():
            if k is not None and k.shape[0] > 1 and not alone:
                x = matrices[rel]
                width = 0 if x is None else x.shape[1]
                cols = await shuffle([k[:, j] for j in range(k.shape[1])] + [x[:, j] for j in range(width)])
                keymats[rel] = self.stack_columns(cols[:k.shape[1]])
                if width:
                    matrices[rel] = self.stack_columns(cols[k.shape[1]:])

        self.progress("join")
        record_keys_ = await self.record_keys(keymats, layouts) if plan.perturbation is not None else None
        if alone:
            rows = keymats[plan.relations[0]].shape[0]
            return self.aggregate_rows(matrices, layouts, {plan.relations[0]: list(range(rows))},
                                             {plan.relations[0]: [True] * rows}, None, record_keys_)
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
        person_keys = tokens[(plan.relations[0], f"key_{plan.relations[0]}")]
        return self.aggregate_rows(matrices, layouts, index, matched, person_keys, record_keys_)

    def aggregate_rows(self, matrices, layouts, index, matched, person_keys, record_keys_):
        """Gather the joined rows, then the moments per cell (person_keys: the root's public tokens)."""
        plan = self.plan
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
            if rel == plan.relations[0] and record_keys_ is not None:
                columns[(rel, RECORD_KEY)] = record_keys_[idx]       # the root is never NULL
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
        # Pre-aggregated per key and cell, a person has at most one row in a cell.
        rows_of = None if self.one_row_per_person_and_cell() else \
            person_rows([person_keys[i] for i in index[plan.relations[0]]])   # the root is never NULL
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
        keyed = [m for m in plan.moments if m.kind == "cellkey"]
        if keyed:                         # Σ of the record keys of each set's persons (perturbation)
            X = weighted(keyed)
            R = columns[(plan.relations[0], RECORD_KEY)]
            if rows_of is None:
                totals = R @ X
            else:                         # each person once: present in a column if any row is
                present = 1 - self.per_person(1 - X, rows_of, lambda acc, x: acc * x, pad=1)
                totals = R[rows_of[0]] @ present
            for j, m in enumerate(keyed):
                moments[m.name] = totals[j * G:(j + 1) * G]
        squared = [m for m in plan.moments if m.kind == "sum2"]
        if squared:                       # Σ over persons of (the person's total in the cell)²
            X = weighted(squared)
            C = X if rows_of is None else self.per_person(X, rows_of, lambda acc, x: acc + x)
            totals = np.sum(C * C, axis=0)
            for j, m in enumerate(squared):
                moments[m.name] = totals[j * G:(j + 1) * G]
        return moments, n

    async def record_keys(self, keymats, layouts):
        """Each shuffled root row's record key, from its key hash (sqlmpc.mpc.record_keys)."""
        root = self.plan.relations[0]
        federation = getattr(getattr(self.plan, "query", None), "federation", None)
        state = party_state(getattr(federation, "path", None), self.me)
        column = layouts[root]["keys"].index(f"key_{root}")
        return await record_keys(keymats[root][:, column], load_share(state), self.secint)

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
        function = scalar_of(node)
        if function is not None and function.secure is not None:
            return function.secure(mpc, [self.row_expr(a, columns, n) for a in arguments(node)])
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


def padded_size(n: int) -> int:
    """The public size a local result of n rows is padded to: at most 25 % more rows."""
    size = PAD_FLOOR
    while size < n:
        size = -(-size * PAD_GROWTH[0] // PAD_GROWTH[1])
    return size


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


def expr_bound(node, locals_) -> int:
    """An upper bound on |a row expression| from the local columns' declared bounds."""
    if isinstance(node, exp.Paren):
        return expr_bound(node.this, locals_)
    if isinstance(node, exp.Column):
        col = locals_.get((node.table, node.name))
        return col.bound if col is not None else MAX_VALUE
    if isinstance(node, (exp.Literal,)):
        return abs(int(Fraction(node.this))) + 1
    if isinstance(node, exp.Mul):
        return expr_bound(node.this, locals_) * expr_bound(node.expression, locals_)
    if isinstance(node, (exp.Add, exp.Sub)):
        return expr_bound(node.this, locals_) + expr_bound(node.expression, locals_)
    if scalar_of(node) is not None:                 # GREATEST, LEAST: one of the arguments
        return max(expr_bound(a, locals_) for a in arguments(node))
    return 1
