"""Local mode under cell-key perturbation: the owners sum per cell, MPC adds the cell keys.

In local mode each owner sums every moment per cell itself and only the G cell totals enter
MPC.  A perturbed plan also needs each cell's *cell keys* — Σ of the record keys of its persons
— and no owner may know a record key.  So the owner's local result is one row per person and
cell (the person's key hash, the cell, the person's sums: the per-key form of join mode), and

* the ordinary moments (persons, sums, sums of squares) are summed per cell by the owner, in
  the clear, and secret-shared as G totals (exactly what exact local mode inputs);
* the rows' key hashes (padded like join mode's inputs, :func:`sqlmpc.mpc.join.padded_size`)
  and, per ``cellkey`` or ``rowkey`` moment, each row's weight in each cell (a row × G matrix W: the row's
  cell, times the moment's flag) are secret-shared; MPC computes every row's record key r
  (:mod:`sqlmpc.mpc.record_keys`, one masked opening per row) and the cell keys Σ r·W in one
  matrix product.

No shuffle and no tokens: with one owner and one row per person and cell there is nothing to
join.  What the parties learn is the padded size of each local result (declared as input sizes).
"""

from __future__ import annotations

import secrets

import numpy as np
from sqlglot import exp

from sqlmpc.mpc.join import integers
from sqlmpc.mpc.prf import token_field
from sqlmpc.mpc.record_keys import load_share, party_state, record_keys
from sqlmpc.plan.plan import KEYED


async def perturbed_local_moments(engine, sizes) -> dict[str, object]:
    """Every moment per cell (secure arrays of G values): totals from the owners, cell keys from MPC."""
    plan = engine.plan
    G = plan.grid.size
    root = plan.relations[0]
    plain = [m for m in plan.moments if m.kind not in KEYED]
    keyed = [m for m in plan.moments if m.kind in KEYED]
    keyfield = token_field()
    totals, hashes, weights = None, [], []
    for part in plan.parts:
        n = sizes[(part.relation, part.part)]
        values = keys = W = None
        if part.party == engine.me:
            t = engine.local[(part.relation, part.part)]
            values, keys, W = _encode(t, part, f"key_{root}", plain, keyed, G, n)
        x = engine.input_matrix(part, G, len(plain), values)
        totals = x if totals is None else totals + x     # the parts' persons are disjoint: totals add up
        if keyed:
            hashes.append(engine.input_matrix(part, n, 1, keys, keyfield)[:, 0])
            weights.append(engine.input_matrix(part, n, len(keyed) * G, W))
    moments = {m.name: totals[:, j] for j, m in enumerate(plain)}
    if keyed:
        federation = getattr(getattr(plan, "query", None), "federation", None)
        share = load_share(party_state(getattr(federation, "path", None), engine.me))
        x = hashes[0] if len(hashes) == 1 else engine.mpc.np_concatenate(hashes)
        r = await record_keys(x, share, engine.secint)        # one round of openings for every part
        cell_keys, at = None, 0
        for w in weights:
            s = r[at:at + w.shape[0]] @ w                      # (C·G,): Σ over rows of record key × weight
            cell_keys = s if cell_keys is None else cell_keys + s
            at += w.shape[0]
        for j, m in enumerate(keyed):
            moments[m.name] = cell_keys[j * G:(j + 1) * G]
    return moments


def _encode(t, part, key: str, plain, keyed, G: int, n: int):
    """The owner's matrices: per-cell totals (G × moments), padded key hashes (n × 1), weights W (n × C·G)."""
    cells = t.column("cell").to_numpy().astype(np.int64)
    inside = (cells >= 0) & (cells < G)                    # a value outside the domain is in no cell
    rows = np.nonzero(inside)[0]
    values = np.zeros((G, len(plain)), dtype=object)
    for j, m in enumerate(plain):
        v = _evaluate(m.expr, t, part)[rows]
        if m.kind == "sum2":
            v = v * v                                      # one row per person and cell: its contribution
        np.add.at(values[:, j], cells[rows], v)
    # Padding rows get a fresh random key above 2^64 (no person's hash) and no cell.
    keys = (np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64).astype(object) + 2 ** 64).reshape(n, 1)
    keys[:t.num_rows, 0] = integers(t.column(key))
    W = np.zeros((n, len(keyed) * G), dtype=object)
    for j, m in enumerate(keyed):
        W[rows, j * G + cells[rows]] = _evaluate(m.expr, t, part)[rows]
    return values, keys, W


def _evaluate(node: exp.Expression, t, part) -> np.ndarray:
    """A per-key moment expression (a product of the local result's columns, or 1) on every row."""
    if isinstance(node, exp.Paren):
        return _evaluate(node.this, t, part)
    if isinstance(node, exp.Column):
        return integers(t.column(node.name), part.column(node.name).bound)
    if isinstance(node, exp.Literal):
        return np.full(t.num_rows, int(node.this), dtype=object)
    if isinstance(node, exp.Mul):
        return _evaluate(node.this, t, part) * _evaluate(node.expression, t, part)
    raise TypeError(f"not a per-key moment expression: {node.sql()}")
