"""Oblivious shuffle by resharing (docs/mpc-primitives.md), O(n) per subset per column.

For every subset S of m−t parties (in itertools.combinations order) — exactly the
subsets MPyC's PRSS keys ``runtime.prss_keys()[S]`` are shared by, so the members of S
already hold a common 128-bit key no party outside S knows:

1. each member i ∈ S turns its Shamir share s_i into an additive share
   λ_i^S · s_i (λ^S = Lagrange coefficients at 0 for the points {j+1 : j ∈ S};
   |S| = m−t ≥ t+1, so Σ_{i∈S} λ_i^S s_i is the secret);
2. each member applies π_S locally, π_S = argsort of SHAKE-256(key_S ‖ tag ‖ uci ‖ S)
   as 64-bit random sort keys (uci = MPyC's unique common input, fresh per call);
3. each member re-inputs its permuted additive part (one vectorised ``mpc.input``
   with the members of S as senders) and the parties sum the |S| inputs: a fresh
   Shamir sharing of π_S(x).

The output is π_{S_1}∘…∘π_{S_c} applied to the input, the same for all columns.
Any coalition of ≤ t parties misses at least one S (the complement of a t-set
contains an (m−t)-subset they are all outside of), hence one π_S, which is a
uniformly random permutation independent of their view: the composition is
hidden from them.  Cost per subset: |S| inputs of k·n field elements, one round.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

from sqlmpc.mpc import runtime
from sqlmpc.mpc.workers import sliced_inputs

_TAG = b"sqlmpc/shuffle/v1"


def subsets(m: int, t: int) -> list[tuple[int, ...]]:
    return list(itertools.combinations(range(m), m - t))


def subset_permutation(key: bytes, uci: bytes, subset: tuple[int, ...], n: int) -> np.ndarray:
    """π_S for one call: argsort of n pseudorandom 64-bit values from SHAKE-256(key ‖ tag ‖ uci ‖ S)."""
    h = hashlib.shake_256(key + _TAG + uci + bytes(subset))
    r = np.frombuffer(h.digest(8 * n), dtype=np.uint64)
    return np.argsort(r, kind="stable")


_perms: dict = {}     # (key, uci, subset, n) -> π_S: the calls of one wide relation share a uci


def cached_permutation(key: bytes, uci: bytes, subset: tuple[int, ...], n: int) -> np.ndarray:
    """π_S of this uci, computed once for all the calls that shuffle one relation's columns."""
    ident = (bytes(key), bytes(uci), subset, n)
    if ident not in _perms:
        if any(k[1] != ident[1] for k in _perms):
            _perms.clear()                      # a new relation: the old permutations are done with
        _perms[ident] = subset_permutation(key, uci, subset, n)
    return _perms[ident]


def lagrange_at_zero(field, subset: tuple[int, ...]) -> list[int]:
    return runtime.recombination_vector(field, tuple(j + 1 for j in subset), 0)


def compose(perms: list[np.ndarray]) -> np.ndarray:
    """Index map of applying perms[0], then perms[1], ...: out[i] = x[result[i]]."""
    total = np.arange(len(perms[0]))
    for p in perms:
        total = total[p]
    return total


def fresh_uci() -> bytes:
    """A value the same at all parties and fresh per call (MPyC's program counter)."""
    return runtime.prss_uci()


async def shuffle(columns: list, *, uci: bytes | None = None, batch: int = 1 << 16, workers=None,
                  _trace: dict | None = None) -> list:
    """Apply one common secret permutation to equal-length 1-D secure arrays.

    Columns may be of different secure types (each type is processed as one
    stacked block, all with the same permutation).  Returns new secure arrays in
    the same order.  Calls given the same ``uci`` (from :func:`fresh_uci`) apply the
    same permutation: a wide relation can be shuffled a few columns at a time.  With ``workers``
    (:class:`sqlmpc.mpc.workers.Workers`) worker w re-inputs slice w of the rows.
    `_trace` (tests only) receives this party's π_S per subset (None where it is
    not a member).
    """
    mpc = runtime.current()

    if not columns:
        return []
    n = columns[0].shape[0]
    for c in columns:
        if len(c.shape) != 1 or c.shape[0] != n:
            raise ValueError("shuffle expects 1-D secure arrays of equal length")
    m, t, pid = len(mpc.parties), mpc.threshold, mpc.pid
    if n <= 1 or m == 1:
        return list(columns)
    if t == 0 or mpc.options.no_prss:
        raise ValueError("shuffle needs t >= 1 and PRSS keys (m >= 3)")
    uci = uci or fresh_uci()

    # group columns by secure type; one stacked (k, n) block per type
    groups: dict[type, list[int]] = {}
    for j, c in enumerate(columns):
        groups.setdefault(type(c), []).append(j)
    blocks = {st: mpc.np_stack([columns[j] for j in idx]) if len(idx) > 1
              else mpc.np_reshape(columns[idx[0]], (1, n)) for st, idx in groups.items()}

    for S in subsets(m, t):
        member = pid in S
        perm = cached_permutation(runtime.prss_keys()[S], uci, S, n) if member else None
        if _trace is not None:
            _trace[S] = perm
        new_blocks = {}
        for st, X in blocks.items():
            sectype = X.sectype
            field = sectype.field
            k = X.shape[0]
            v = None
            if member:
                shares = await mpc.gather(X)
                lam = lagrange_at_zero(field, S)[S.index(pid)]
                v = shares.value[:, perm]
                del shares
            if v is not None and v.dtype != object:
                v = v.astype(object)                 # a small field's int64 shares: no overflow below
            # Re-input a batch of rows at a time (the copies stay small), slice w in worker w's session.
            new_blocks[st] = await sliced_inputs(mpc, workers, sectype, v, S, (k, n), batch=batch, axis=1,
                                                 scale=lam if member else 1)
            del v
        blocks = new_blocks

    out = [None] * len(columns)
    for st, idx in groups.items():
        X = blocks[st]
        for r, j in enumerate(idx):
            out[j] = X[r]
    return out
