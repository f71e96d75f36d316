"""Join tokens: a keyed Legendre-symbol PRF of secret keys, opening only the PRF output.

Token bit j of key k is the Legendre symbol ((k + s_j) / p), s_1..s_bits a fresh
secret random PRF key drawn by PRSS (no party knows it).  Per element and bit a
fresh secret random r is drawn and y = (k + s_j)·r² is opened: for k + s_j ≠ 0, y
is uniform on the coset of squares or non-squares, so it reveals exactly the
symbol.  All n·bits values are computed in parallel.

Optimisation (default, ``mode="przs"``): r² is one secure multiplication (one
resharing round); the second product (k + s_j)·r² is *not* reshared: each party
multiplies its shares locally (a degree-2t sharing of y), adds a pseudorandom
degree-2t sharing of zero (PRZS, from MPyC's PRSS keys: no communication) and the
2t+1 = m shares are opened with threshold 2t.  The zero sharing makes the opened
degree-2t polynomial uniform given y (for any ≤t parties, the PRF term of the one
subset they are all outside of spans the polynomials vanishing at 0 and at their
points), so this opens y and nothing else — the same argument MPyC relies on for
its own PRZS.  It saves one resharing of n·bits elements (~35–40 % of the time,
see docs/mpc-primitives.md).  ``mode="reshare"`` is the plain two-multiplication
version (kept for comparison and as a fallback when PRSS is disabled).

To compare tokens across several key columns (the two sides of a join), tokenise
them *under one PRF key*: pass them together (``key_tokens([a, b], bits=...)``)
or pass the same ``key=await prf_key(sectype, bits)`` to every call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def token_bits(n_total: int) -> int:
    """Bits such that P[any collision among n_total distinct keys] <= C(n,2)·2^-bits < 2^-20."""
    n = max(int(n_total), 2)
    pairs = n * (n - 1) // 2
    return (pairs - 1).bit_length() + 21  # pairs <= 2^c, so pairs·2^-(c+21) <= 2^-21 < 2^-20


@dataclass(frozen=True)
class PrfKey:
    sectype: type
    s: object       # secure array, shape (bits,)
    bits: int


def prf_key(sectype, bits: int) -> PrfKey:
    """A fresh secret PRF key (s_1..s_bits, by PRSS: no communication, unknown to every party).

    `sectype` is the secure type (e.g. SecInt(64)) or a secure array of it."""
    from mpyc.runtime import mpc
    if hasattr(sectype, "sectype"):
        sectype = sectype.sectype
    return PrfKey(sectype, mpc._np_randoms(sectype, bits), bits)


def _pack(symbols: np.ndarray, bits: int) -> np.ndarray:
    b = (symbols == 1)
    if bits <= 64:
        w = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))
        return (b.astype(np.uint64) * w).sum(axis=1, dtype=np.uint64)
    w = np.array([1 << j for j in range(bits)], dtype=object)
    return (b.astype(object) * w).sum(axis=1)


_legendre = None


def legendre_symbols(values: np.ndarray, p: int) -> np.ndarray:
    global _legendre
    if _legendre is None:
        import gmpy2
        _legendre = np.frompyfunc(gmpy2.legendre, 2, 1)
    return _legendre(values, p).astype(np.int8)


async def key_tokens(keys, *, bits: int, key: PrfKey | None = None, mode: str = "przs",
                     why: str = "join on pseudonymous keys: match tokens in the clear"):
    """Tokens of secure 1-D integer/field array(s) `keys` under a keyed Legendre PRF.

    keys: a secure array (n,) or a list of them (all of one secure type; one PRF
    key for all, so tokens compare across the list).  Returns uint64 arrays if
    bits <= 64, else object arrays of Python ints (a list if keys is a list).
    Opens n·bits values through the gateway (what="join tokens").
    """
    from mpyc import thresha
    from mpyc.runtime import mpc

    from sqlmpc.mpc.reveal import reveal

    is_list = isinstance(keys, list)
    arrays = keys if is_list else [keys]
    if not arrays:
        return []
    sectype = arrays[0].sectype
    for a in arrays:
        if a.sectype is not sectype or len(a.shape) != 1:
            raise ValueError("key_tokens: all key arrays must be 1-D of one secure type")
    lengths = [a.shape[0] for a in arrays]
    n = sum(lengths)
    if key is None:
        key = prf_key(sectype, bits)
    if key.bits != bits or key.sectype is not sectype:
        raise ValueError("key_tokens: PRF key does not match bits/secure type")
    empty = np.zeros(0, dtype=np.uint64 if bits <= 64 else object)
    if n == 0:
        return [empty for _ in arrays] if is_list else empty

    k = arrays[0] if len(arrays) == 1 else mpc.np_concatenate(arrays)
    field = sectype.field
    p = int(field.modulus)
    N = n * bits
    ks = mpc.np_add(mpc.np_reshape(k, (n, 1)), mpc.np_reshape(key.s, (1, bits)))  # (n, bits), local
    r = mpc.np_reshape(mpc._np_randoms(sectype, N), (n, bits))
    r2 = mpc.np_multiply(r, r)  # one resharing round
    t, m = mpc.threshold, len(mpc.parties)
    if mode == "przs" and not mpc.options.no_prss and t > 0:
        ks_sh, r2_sh = await mpc.gather(ks, r2)
        z = thresha.np_pseudorandom_share_0(field, m, mpc.pid, mpc.prfs(field.order), mpc._prss_uci(), N)
        y_sh = ks_sh * r2_sh + z.reshape((n, bits))  # degree-2t sharing of y, rerandomised
        y = await reveal(sectype.array(y_sh), what="join tokens", why=why, raw=True, _threshold=2 * t)
    elif mode in ("przs", "reshare"):
        y = await reveal(mpc.np_multiply(ks, r2), what="join tokens", why=why, raw=True)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    tokens = _pack(legendre_symbols(y.value, p), bits)
    if not is_list:
        return tokens
    out, i = [], 0
    for length in lengths:
        out.append(tokens[i:i + length])
        i += length
    return out


# -- power-residue tokens ------------------------------------------------------------
#
# The Legendre PRF opens one bit per multiplication.  Its generalisation to d-th power
# residues (Damgård 1988) opens log2(d) bits per multiplication: for p ≡ 1 (mod d) the
# d-th power residue symbol χ(y) = y^((p-1)/d) is a d-th root of unity, and with a mask
# ρ that is a uniformly random d-th power, y = (k + s)·ρ is uniform on the coset of
# (k + s) and reveals χ(k + s) and nothing else.  ρ is a product of t+1 parties' secret
# inputs r_i^d (each party picks r_i itself), so no t parties know it.  With d = 2^16 and
# a 128-bit prime, four evaluations give a 64-bit token; the known attacks on the power
# residue PRF (which need known input/output pairs, not a shuffled multiset) stay far
# beyond reach at this field size.

RESIDUE_BITS = 16


def _token_prime(bits: int = 128, degree_bits: int = RESIDUE_BITS) -> int:
    import gmpy2
    step = 1 << degree_bits
    c = (1 << (bits - 1)) // step + 1
    while not gmpy2.is_prime(c * step + 1):
        c += 1
    return int(c * step + 1)


_TOKEN_PRIME = None
_ROOTS: dict | None = None


def token_field():
    """The secure prime field of join keys: p ≡ 1 (mod 2^16), 128 bits (keys are 64-bit hashes)."""
    from mpyc.runtime import mpc
    global _TOKEN_PRIME
    if _TOKEN_PRIME is None:
        _TOKEN_PRIME = _token_prime()
    return mpc.SecFld(_TOKEN_PRIME)


def _root_index(p: int) -> dict:
    """Map each 2^16-th root of unity mod p to its discrete log (a 16-bit token digit)."""
    global _ROOTS
    if _ROOTS is None:
        import gmpy2
        d = 1 << RESIDUE_BITS
        a = 3
        while gmpy2.powmod(a, (p - 1) // 2, p) == 1:   # a non-square generates the full 2-part
            a += 1
        g = int(gmpy2.powmod(a, (p - 1) // d, p))
        table, x = {}, 1
        for i in range(d):
            table[x] = i
            x = x * g % p
        _ROOTS = table
    return _ROOTS


async def residue_tokens(keys: list, *, bits: int,
                         why: str = "join on pseudonymous keys: match tokens in the clear") -> list[np.ndarray]:
    """64-bit-or-more tokens of secret keys (arrays of `token_field()`), one PRF key for all."""
    import gmpy2
    from mpyc import thresha
    from mpyc.runtime import mpc

    from sqlmpc.mpc.randomness import uniform_below
    from sqlmpc.mpc.reveal import reveal

    lengths = [a.shape[0] for a in keys]
    n = sum(lengths)
    digits = max(1, -(-bits // RESIDUE_BITS))
    if n == 0:
        return [np.zeros(0, dtype=object) for _ in keys]
    sectype = keys[0].sectype
    field = sectype.field
    p = int(field.modulus)
    d = 1 << RESIDUE_BITS
    N = n * digits
    k = keys[0] if len(keys) == 1 else mpc.np_concatenate(keys)
    s = mpc._np_randoms(sectype, digits)                                 # the PRF key, unknown to all
    y = mpc.np_add(mpc.np_reshape(k, (n, 1)), mpc.np_reshape(s, (1, digits)))
    t, m = mpc.threshold, len(mpc.parties)
    # Masks: parties 0..t each input ρ_i = r_i^d; their product is a random d-th power.
    masks = []
    for i in range(t + 1):
        mine = None
        if mpc.pid == i:
            r = uniform_below(p - 1, N) + 1
            mine = np.fromiter((int(gmpy2.powmod(v, d, p)) for v in r), dtype=object, count=N)
        data = mine if mine is not None else np.zeros(N, dtype=object)
        masks.append(mpc.np_reshape(mpc.input(sectype.array(field.array(data)), senders=i), (n, digits)))
    for mask in masks[:-1]:
        y = mpc.np_multiply(y, mask)                                     # t resharing rounds
    if t > 0 and not mpc.options.no_prss:
        # The last product is opened as a degree-2t sharing, re-randomised by a PRZS.
        y_sh, last_sh = await mpc.gather(y, masks[-1])
        z = thresha.np_pseudorandom_share_0(field, m, mpc.pid, mpc.prfs(field.order), mpc._prss_uci(), N)
        opened = await reveal(sectype.array(y_sh * last_sh + z.reshape((n, digits))), what="join tokens",
                              why=why, raw=True, _threshold=2 * t)
    else:
        opened = await reveal(mpc.np_multiply(y, masks[-1]), what="join tokens", why=why, raw=True)
    roots = _root_index(p)
    exponent = (p - 1) // d
    values = opened.value.reshape(-1)
    symbols = np.fromiter((roots[int(gmpy2.powmod(v, exponent, p))] if v else 0 for v in values),
                          dtype=object, count=N).reshape(n, digits)
    tokens = np.zeros(n, dtype=object)
    for j in range(digits):
        tokens = tokens * d + symbols[:, j]
    out, i = [], 0
    for length in lengths:
        out.append(tokens[i:i + length])
        i += length
    return out
