"""Join mode, the row phase: a relation's rows in, moments per cell out.

Input (padded to a size bucket) → shuffle by resharing → PRF tokens → the join
on public tokens in DuckDB → gather by public indices → row flags and cell
indicators (each relation's cell code made one-hot, then the row-wise Kronecker
product of the relations' one-hots) → moments per cell by one matrix product;
distinct persons and per-person sums where a person has several rows.

Memory is bounded by the federation's ``batch_rows``: inputs are shared, keys
tokenised and joined rows aggregated a batch at a time, and a wide relation is
shuffled a few columns at a time (docs/scaling.md).
"""

from __future__ import annotations

import functools
import itertools
import secrets
from fractions import Fraction

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.mpc.prf import residue_tokens, token_bits, token_field
from sqlmpc.mpc.record_keys import load_share, party_state, record_keys
from sqlmpc.mpc.shuffle import fresh_uci, shuffle
from sqlmpc.plan.plan import LocalColumn, LocalPart
from sqlmpc.sql.functions import arguments, scalar_of

MAX_VALUE = 10 ** 18   # bound of a column whose bound the plan does not state
PAD_FLOOR = 128        # every local result in join mode has at least this many rows ...
PAD_GROWTH = (5, 4)    # ... and otherwise the next size of the series ×1.25 above it
REAL = LocalColumn("real_", "flag", 0, 1, 0)   # 1 on a party's real rows, 0 on its padding
RECORD_KEY = "record_key_"     # the column of each root row's secret record key (perturbed plans)


COMPARISONS = (exp.EQ, exp.NEQ, exp.LT, exp.GT, exp.LTE, exp.GTE)

class JoinMode:
    """The engine's row phase (a mixin of :class:`sqlmpc.mpc.engine.Engine`)."""

    async def run_join_mode(self, sizes) -> dict[str, object]:
        plan = self.plan
        keyfield = token_field()
        matrices, keymats, layouts = {}, {}, {}
        for rel in plan.relations:
            layouts[rel] = self.layout(plan.parts_of(rel)[0])
            matrices[rel], keymats[rel] = self.input_relation(rel, sizes, layouts[rel], keyfield)

        # One relation of one owner, one row per person and cell (a perturbed query on one table):
        # nothing to join and no person to tell apart, so neither shuffle nor tokens are needed.
        alone = len(plan.relations) == 1 and self.one_row_per_person_and_cell()
        self.progress("shuffle")
        for rel in plan.relations:
            if keymats[rel] is not None and keymats[rel].shape[0] > 1 and not alone:
                # Handed over, not kept here: the old shares are freed before the new ones are stacked.
                keymats[rel], matrices[rel] = await self.shuffle_relation(keymats.pop(rel), matrices.pop(rel))
        keymats = {rel: keymats[rel] for rel in plan.relations}          # the relations' order again
        matrices = {rel: matrices[rel] for rel in plan.relations}

        self.progress("join")
        record_keys_ = await self.record_keys(keymats, layouts) if plan.perturbation is not None else None
        if alone:
            rows = keymats[plan.relations[0]].shape[0]
            return self.aggregate_rows(matrices, layouts, {plan.relations[0]: np.arange(rows, dtype=np.int64)},
                                       {plan.relations[0]: np.ones(rows, dtype=bool)}, None, record_keys_)
        total = sum(k.shape[0] * k.shape[1] for k in keymats.values() if k is not None)
        bits = token_bits(max(total, 2))
        # One PRF key for every key column, so that tokens compare across relations.
        columns_ = [(rel, name, k[:, j]) for rel, k in keymats.items() if k is not None
                    for j, name in enumerate(layouts[rel]["keys"])]
        opened = await residue_tokens([c for _, _, c in columns_], bits=bits, batch=self.batch,
                                      done=lambda i, n: self.tick(i, n, "keys"),
                                      workers=self.workers) if columns_ else []
        tokens = {(rel, name): np.zeros(0, dtype=np.uint64) for rel in matrices for name in layouts[rel]["keys"]}
        for (rel, name, _), toks in zip(columns_, opened):
            tokens[(rel, name)] = toks
        index, matched = self.join_in_clear(tokens, {r: 0 if k is None else k.shape[0] for r, k in keymats.items()})
        person_keys = tokens[(plan.relations[0], f"key_{plan.relations[0]}")]
        del keymats, columns_, opened                 # the keys' shares are not needed past their tokens
        return self.aggregate_rows(matrices, layouts, index, matched, person_keys, record_keys_)

    def aggregate_rows(self, matrices, layouts, index, matched, person_keys, record_keys_):
        """The moments per cell of the joined rows, a batch of persons at a time (memory is bounded
        by the batch); ``index``/``matched``: each relation's row per joined row (-1, False: none);
        person_keys: the root's public tokens (None: every joined row is another person)."""
        root = self.plan.relations[0]
        n = len(index[root]) if index else 0
        self.progress("aggregate")        # entered whatever matched: the stage list must not tell it
        if n == 0:
            return self.empty_moments(), 1
        rows_of = None if person_keys is None or self.one_row_per_person_and_cell() else \
            person_rows(person_keys[index[root]])           # the root is never NULL
        if rows_of is None:
            rows_of = np.arange(n, dtype=np.int64).reshape(1, n)
        depth, persons = rows_of.shape
        step = max(1, self.batch // depth)
        totals = None
        for lo in range(0, persons, step):
            block = rows_of[:, lo:lo + step]
            flat = block.ravel()
            real = flat < n                                  # n pads a person with fewer rows
            rows = flat[real]
            local = np.full(flat.shape, rows.size, dtype=np.int64)
            local[real] = np.arange(rows.size)
            part = self.batch_moments(matrices, layouts, {r: index[r][rows] for r in index},
                                      {r: matched[r][rows] for r in matched},
                                      None if depth == 1 else local.reshape(block.shape), record_keys_)
            totals = part if totals is None else {name: totals[name] + part[name] for name in part}
            self.tick(min(persons, lo + step), persons, "persons")
        return totals, n

    def batch_moments(self, matrices, layouts, index, matched, rows_of, record_keys_):
        """The moments per cell of some joined rows, whole persons only (rows_of: each person's rows
        by depth, padded with the row count; None: every row is another person)."""
        plan = self.plan
        n = len(index[plan.relations[0]])

        # Gather the joined rows; a LEFT JOIN row without match gets the columns' "absent" values.
        columns: dict[tuple[str, str], object] = {}
        onehots: dict[str, object] = {}
        for rel in plan.relations:
            x, layout = matrices[rel], layouts[rel]
            idx = np.where(index[rel] >= 0, index[rel], 0)
            hit = np.asarray(matched[rel], dtype=np.int64)
            rows = None if x is None else x[idx]
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
                block = self.onehot(rows[:, lo], width) if rows is not None else None
                absent_onehot = np.zeros((n, width), dtype=object)
                absent_onehot[hit == 0, layout["absent_cell"]] = 1
                if block is None:
                    onehots[rel] = self.secint.array(absent_onehot)
                elif hit.all():
                    onehots[rel] = block
                else:
                    onehots[rel] = block * hit.reshape(n, 1).astype(object) + absent_onehot
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
        R = columns.get((plan.relations[0], RECORD_KEY))
        keyed = [m for m in plan.moments if m.kind == "cellkey"]
        if keyed:                         # Σ of the record keys of each set's persons (perturbation)
            X = weighted(keyed)
            if rows_of is None:
                totals = R @ X
            else:                         # each person once: present in a column if any row is
                present = 1 - self.per_person(1 - X, rows_of, lambda acc, x: acc * x, pad=1)
                totals = R[rows_of[0]] @ present
            for j, m in enumerate(keyed):
                moments[m.name] = totals[j * G:(j + 1) * G]
        rowkeyed = [m for m in plan.moments if m.kind == "rowkey"]
        if rowkeyed:                      # Σ over each set's rows of their person's record key
            totals = R @ weighted(rowkeyed)
            for j, m in enumerate(rowkeyed):
                moments[m.name] = totals[j * G:(j + 1) * G]
        squared = [m for m in plan.moments if m.kind == "sum2"]
        if squared:                       # Σ over persons of (the person's total in the cell)²
            X = weighted(squared)
            C = X if rows_of is None else self.per_person(X, rows_of, lambda acc, x: acc + x)
            totals = np.sum(C * C, axis=0)
            for j, m in enumerate(squared):
                moments[m.name] = totals[j * G:(j + 1) * G]
        return moments

    def input_relation(self, rel: str, sizes, layout: dict, keyfield):
        """A relation's rows, every part's owner inputting its own: (values, keys) secure matrices."""
        blocks, keyblocks = [], []
        for part in self.plan.parts_of(rel):
            n = sizes[(rel, part.part)]
            keys, values = self.encode(part, layout) if part.party == self.me else (None, None)
            x = self.input_matrix(part, n, layout["width"], values)
            kx = self.input_matrix(part, n, len(layout["keys"]), keys, keyfield)
            if x is not None:
                blocks.append(x)
            if kx is not None:
                keyblocks.append(kx)
        return _stack(blocks), _stack(keyblocks)

    async def shuffle_relation(self, keys, values):
        """One secret permutation of a relation's rows, a few columns at a time (memory: the batch)."""
        n, width = keys.shape
        columns = [keys[:, j] for j in range(width)]
        if values is not None:
            columns += [values[:, j] for j in range(values.shape[1])]
        del keys, values          # the old matrices go once their last column is shuffled (the caller keeps none)
        per_call = max(1, self.batch * 8 // n)         # about 8 batches of elements per call
        uci = fresh_uci()
        for lo in range(0, len(columns), per_call):
            columns[lo:lo + per_call] = await shuffle(columns[lo:lo + per_call], uci=uci, batch=self.batch,
                                                      workers=self.workers)
            self.tick(min(len(columns), lo + per_call) * n, len(columns) * n, "values")
        values = self.stack_columns(columns[width:]) if len(columns) > width else None
        return self.stack_columns(columns[:width]), values

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
        columns, pos = {}, (1 if cells.bound > 1 else 0)     # the cell code, made one-hot after the join
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
            fresh = np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64).astype(object) + 2 ** 64
            column = t.column(name)
            keys[:, j] = fresh
            present = pc.is_valid(column).to_numpy(zero_copy_only=False)
            keys[:real, j][present] = integers(column.drop_null())
        out = np.zeros((n, layout["width"]), dtype=object)
        if layout["cells"] > 1:                   # the code `cells` stands for no cell (padding, outside)
            codes = t.column("cell").to_numpy().astype(np.int64)
            out[:, layout["onehot"]] = layout["cells"]
            out[:real, layout["onehot"]] = np.where(codes >= 0, codes, layout["cells"]).astype(object)
        for name, (j, col) in layout["columns"].items():
            out[:real, j] = 1 if name == REAL.name else integers(t.column(name), col.bound)
        return keys, out

    def dummies_reach_cells(self) -> bool:
        """Whether the root's padding rows survive the join: only when no join is INNER
        (an inner join drops them, as their random keys match nothing)."""
        return self.plan.mode == "join" and all(j.kind == "left" for j in self.plan.joins)

    def stack_columns(self, cols):
        return np.stack(cols, axis=1)

    def join_in_clear(self, tokens: dict[tuple[str, str], np.ndarray], sizes: dict[str, int]):
        """Run the query's join structure on public tokens: per relation, its row of each joined
        row (-1 where a LEFT JOIN found none) and whether it matched."""
        con = duckdb.connect()
        rels = self.plan.relations
        for rel in rels:
            data = {"i": pa.array(np.arange(sizes[rel], dtype=np.int64))}
            for (r, name), toks in tokens.items():
                if r == rel:     # tokens beyond 64 bits (over ~3 million keys) compare as text
                    data[name] = pa.array(toks) if toks.dtype != object else pa.array([str(t) for t in toks])
            con.register(f"t_{rel}", pa.table(data))
        sql = exp.select(*[exp.alias_(exp.column("i", table=r), f"i_{r}") for r in rels]).from_(
            exp.to_table(f"t_{rels[0]}").as_(rels[0]))
        for j in self.plan.joins:
            on = exp.and_(*[exp.EQ(this=exp.column(f"key_{a[1]}", table=a[0]),
                                   expression=exp.column(f"key_{b[1]}", table=b[0])) for a, b in j.pairs])
            sql = sql.join(exp.to_table(f"t_{j.relation}").as_(j.relation), on=on,
                           join_type="LEFT" if j.kind == "left" else "INNER")
        sql = sql.order_by(*[f"i_{r}" for r in rels])
        result = con.sql(sql.sql("duckdb")).to_arrow_table()
        index = {r: pc.fill_null(result.column(f"i_{r}"), -1).to_numpy() for r in rels}
        matched = {r: pc.is_valid(result.column(f"i_{r}")).to_numpy() for r in rels}
        return index, matched

    def onehot(self, codes, width: int):
        """The one-hot rows (n × width) of secret cell codes in 0..width (width: no cell).

        By the Lagrange polynomials of the codes: width − 1 multiplications per *joined* row,
        where shuffling a one-hot would cost width columns of every input row."""
        n = codes.shape[0]
        A = lagrange_onehot(width, self.secint.field.modulus)
        power, out = codes, codes.reshape(n, 1) * A[1] + A[0]
        for k in range(2, width + 1):
            power = power * codes
            out = out + power.reshape(n, 1) * A[k]
        return out

    def cell_indicators(self, onehots: dict[str, object], n: int):
        """Row-wise Kronecker product of the relations' one-hots, columns in grid order."""
        plan = self.plan
        if not onehots:
            return self.secint.array(np.ones((n, 1), dtype=object))
        E, sizes = None, []
        for rel in plan.cell_relations:
            if rel not in onehots:        # one cell (a GROUP BY narrowed to one value): every row is in it
                sizes.append(1)
                continue
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
        if isinstance(node, COMPARISONS):
            # A secure comparison is the costly step: one per batch, however many moments use it
            # (a CASE across parties is in a sum, its square and its contributor count).
            key = ("comparison", node.sql())
            if key not in columns:
                columns[key] = self.compare(node, self.row_expr(node.this, columns, n),
                                            self.row_expr(node.expression, columns, n))
            return columns[key]
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
        raise errors.NotSupportedError(f"secure operator {type(node).__name__}")

    def compare(self, node: exp.Expression, a, b):
        """A comparison of two row expressions, at the bit length their declared bounds need (a year
        against a year: 13 bits, not the row field's 66 or more; the secure comparison's cost
        follows the bit length)."""
        bound = expr_bound(node.this, self.local_columns) + expr_bound(node.expression, self.local_columns)
        bits = min(bound.bit_length() + 1, self.secint.bit_length)
        d = b - a if isinstance(node, (exp.GT, exp.LTE)) else a - b
        if isinstance(node, (exp.EQ, exp.NEQ)):
            equal = self.mpc.np_sgn(d, l=bits, EQ=True)
            return equal if isinstance(node, exp.EQ) else 1 - equal
        less = self.mpc.np_sgn(d, l=bits, LT=True)          # a < b (GT, LTE: b < a)
        return less if isinstance(node, (exp.LT, exp.GT)) else 1 - less


@functools.cache
def lagrange_onehot(width: int, p: int) -> np.ndarray:
    """Coefficients mod p of the polynomials e_v (v < width) with e_v(u) = [u = v] on u = 0..width:
    row k holds the coefficients of x^k."""
    A = np.zeros((width + 1, width), dtype=object)
    for v in range(width):
        poly, denominator = [1], 1
        for u in range(width + 1):
            if u != v:                             # poly · (x − u)
                poly = [a - u * b for a, b in zip([0] + poly, poly + [0])]
                denominator *= v - u
        inverse = pow(denominator, -1, p)
        A[:, v] = [c * inverse % p for c in poly]
    return A


def padded_size(n: int) -> int:
    """The public size a local result of n rows is padded to: at most 25 % more rows."""
    size = PAD_FLOOR
    while size < n:
        size = -(-size * PAD_GROWTH[0] // PAD_GROWTH[1])
    return size


def person_rows(persons: np.ndarray) -> np.ndarray | None:
    """The joined rows of each person (public tokens) by depth: depth × persons, padded with n;
    None when every row is a different person."""
    n = len(persons)
    _, person, counts = np.unique(persons, return_inverse=True, return_counts=True)
    if len(counts) == n:
        return None
    order = np.argsort(person, kind="stable")          # rows grouped by person, in row order
    first = np.cumsum(counts) - counts
    depth = np.arange(n) - first[person[order]]
    index = np.full((int(counts.max()), len(counts)), n, dtype=np.int64)
    index[depth, person[order]] = order
    return index


def integers(column, bound: int = MAX_VALUE) -> np.ndarray:
    """An integer Arrow column (64-bit, unsigned, or DuckDB's HUGEINT as decimal) as Python ints."""
    if pa.types.is_decimal(column.type) and bound < 2 ** 63:
        column = pc.cast(column, pa.int64())
    if pa.types.is_integer(column.type):
        return column.to_numpy().astype(object)
    return np.array([int(v) for v in column.to_pylist()], dtype=object)   # wider than 64 bits


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
