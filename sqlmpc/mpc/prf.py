"""Join tokens: a keyed power-residue PRF of secret keys, opening only the PRF output.

The Legendre PRF (token bit j = the quadratic character of k + s_j) opens one bit
per secure multiplication.  Its generalisation to d-th power residues (Damgård
1988) opens log2(d) bits per multiplication: for a prime p ≡ 1 (mod d) the d-th
power residue symbol χ(y) = y^((p-1)/d) is a d-th root of unity, and with a mask
ρ that is a uniformly random d-th power, y = (k + s)·ρ is uniform on the coset
of (k + s) and reveals χ(k + s) and nothing else.

Keys live in their own 128-bit prime field with p ≡ 1 (mod 2^16) (`token_field`);
the PRF key s_1..s_J is drawn fresh per call by PRSS (no party knows it).

Only some parties see the masked values (`maskers`): parties 0..t−1 (at least one)
each input r_i^d, and ρ is their product; the others, m − t ≥ t + 1 of them, receive
y = (k + s)·ρ.  A coalition of at most t parties that receives y lacks at least one
masker's factor, so y is uniform on its coset given the coalition's view; a coalition
of maskers receives nothing.  For m = 3 that is one mask input and no resharing per
digit, where masking by t + 1 parties and opening to all needed two inputs and one
resharing.  The last product is not reshared: each party multiplies its shares
locally (a degree-2t sharing of y), adds a pseudorandom degree-2t sharing of zero
(PRZS, from MPyC's PRSS keys: no communication) and the m shares are opened to the
receivers with threshold 2t; the zero sharing makes the opened polynomial uniform
given y.

The symbols are the tokens every party learns: the receivers split the
exponentiations between them and send every party the 16-bit logs
(``shared_residue_logs``), which tells nobody more than the tokens.

Tokenise every key column of a query in one call: one PRF key for all, so that
tokens compare across relations.
"""

from __future__ import annotations

import asyncio

import gmpy2
import numpy as np

from sqlmpc.errors import PartyError
from sqlmpc.mpc import runtime
from sqlmpc.mpc.reveal import current_ledger, reveal
from sqlmpc.mpc.runtime import uniform_below
from sqlmpc.mpc.workers import slices


def token_bits(n_total: int) -> int:
    """Bits such that P[any collision among n_total distinct keys] <= C(n,2)·2^-bits < 2^-20."""
    n = max(int(n_total), 2)
    pairs = n * (n - 1) // 2
    return (pairs - 1).bit_length() + 21  # pairs <= 2^c, so pairs·2^-(c+21) <= 2^-21 < 2^-20


# With d = 2^16 and a 128-bit prime, four evaluations give a 64-bit token.  The known
# attacks on the power residue PRF need many known input/output pairs and run in about
# p/(d·M²) steps for M pairs; here the outputs are a shuffled multiset under a fresh key
# per query, and even with known pairs 2^128/(2^16·M²) stays far out of reach.

RESIDUE_BITS = 16


def _token_prime(bits: int = 128, degree_bits: int = RESIDUE_BITS) -> int:
    step = 1 << degree_bits
    c = (1 << (bits - 1)) // step + 1
    while not gmpy2.is_prime(c * step + 1):
        c += 1
    return int(c * step + 1)


_TOKEN_PRIME = None
_ROOTS: dict | None = None


def token_field():
    """The secure prime field of join keys: p ≡ 1 (mod 2^16), 128 bits (keys are 64-bit hashes)."""
    mpc = runtime.current()
    global _TOKEN_PRIME
    if _TOKEN_PRIME is None:
        _TOKEN_PRIME = _token_prime()
    return mpc.SecFld(_TOKEN_PRIME)


def _root_index(p: int) -> dict:
    """Map each 2^16-th root of unity mod p to its discrete log (a 16-bit token digit)."""
    global _ROOTS
    if _ROOTS is None:
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


_LOW = (1 << 64) - 1
_TABLE: tuple | None = None


def _root_table(p: int) -> tuple[np.ndarray, np.ndarray]:
    """The roots' low 64 bits, sorted, and their discrete logs (0 → 0 for the symbol of 0): a
    vectorised search instead of a dict lookup of a 128-bit integer per symbol."""
    global _TABLE
    if _TABLE is None or _TABLE[0] != p:
        roots = _root_index(p)
        low = np.array([r & _LOW for r in roots] + [0], dtype=np.uint64)
        logs = np.array([*roots.values(), 0], dtype=np.int64)
        if len(np.unique(low)) != len(low):
            raise RuntimeError("the 2^16-th roots of unity differ in more than their low 64 bits")
        order = np.argsort(low)
        _TABLE = (p, low[order], logs[order])
    return _TABLE[1], _TABLE[2]


def residue_logs(values, p: int) -> np.ndarray:
    """log χ(v) of field elements v (χ(0) = 0 counts as log 0): int64 array.

    One C loop of exponentiations, then the roots are found by their low 64 bits."""
    symbols = gmpy2.powmod_base_list(list(values), (p - 1) >> RESIDUE_BITS, p)
    low = np.fromiter(map(int, symbols), dtype=object, count=len(symbols))
    low &= _LOW
    low = low.astype(np.uint64)
    keys, logs = _root_table(p)
    at = np.minimum(np.searchsorted(keys, low), len(keys) - 1)
    if not np.array_equal(keys[at], low):
        raise RuntimeError("a power residue symbol that is not a 2^16-th root of unity")
    return logs[at]


async def shared_residue_logs(mpc, values, p: int, count: int, senders=None) -> np.ndarray:
    """:func:`residue_logs` of ``count`` public values, held by the parties ``senders`` (default:
    all): each of them computes a contiguous share of the logs and sends it to every party as
    16-bit integers.  The same array at every party, for a fraction of the exponentiations; the
    logs are functions of values their senders hold, which every party may learn."""
    senders = list(range(len(mpc.parties))) if senders is None else list(senders)
    cut = [count * i // len(senders) for i in range(len(senders) + 1)]
    mine = None
    if mpc.pid in senders:
        w = senders.index(mpc.pid)
        mine = residue_logs(values[cut[w]:cut[w + 1]], p).astype("<u2").tobytes()
    parts = await mpc.transfer(mine, senders=senders)
    out = []
    for w, part in enumerate(parts):
        expected = 2 * (cut[w + 1] - cut[w])
        if not isinstance(part, bytes) or len(part) != expected:
            size = len(part) if isinstance(part, bytes) else type(part).__name__
            raise PartyError(f"party {senders[w]} sent malformed join-token digits ({size} bytes, "
                             f"expected {expected})")
        out.append(np.frombuffer(part, dtype="<u2"))
    return np.concatenate(out).astype(np.int64)


def maskers(m: int, t: int) -> tuple[range, list[int]]:
    """Who masks the PRF inputs and who sees them masked: parties 0..t−1 (at least one) each input
    a random d-th power, and only the others receive the masked values.  Any ≤ t parties among
    whom is a receiver lack at least one masker's factor (a federation of one opens to itself)."""
    count = max(t, 1)
    return range(count), list(range(count, m)) or [0]


async def residue_tokens(keys: list, *, bits: int, batch: int = 1 << 16, done=None, workers=None,
                         why: str = "join on pseudonymous keys: match tokens in the clear") -> list[np.ndarray]:
    """64-bit-or-more tokens of secret keys (arrays of `token_field()`), one PRF key for all.

    Keys go through in batches of ``batch`` (the PRF key is drawn once), so memory is bounded by
    the batch; ``done(keys so far, keys)`` hears each batch.  With ``workers``
    (:class:`sqlmpc.mpc.workers.Workers`) the keys are cut into as many contiguous slices as
    there are sessions, and worker w tokenises slice w under the same PRF key.  Tokens of at
    most 64 bits come back as uint64 arrays, longer ones as object arrays.
    """
    mpc = runtime.current()
    lengths = [a.shape[0] for a in keys]
    n = sum(lengths)
    digits = max(1, -(-bits // RESIDUE_BITS))
    if n == 0:
        return [np.zeros(0, dtype=np.uint64) for _ in keys]
    k = keys[0] if len(keys) == 1 else mpc.np_concatenate(keys)
    s = runtime.np_randoms(k.sectype, digits)                               # the PRF key, unknown to all
    ledger = current_ledger()
    first = len(ledger.entries)
    bounds = slices(n, 1 if workers is None else workers.count)
    own = _tokens(mpc, k[slice(*bounds[0])], s, digits, batch, why,
                  None if done is None else lambda i: done(min(n, i * len(bounds)), n))
    if len(bounds) == 1:
        tokens = await own
    else:                   # the workers' slices: this party's shares of them, and of the PRF key
        s_shares = (await mpc.gather(s)).value
        jobs = [((await mpc.gather(k[lo:hi])).value, s_shares, digits, batch, why) for lo, hi in bounds[1:]]
        parts = await asyncio.gather(own, workers.map(tokens_of_slice, jobs))
        tokens = np.concatenate([parts[0], *parts[1]])
    ledger.coalesce(first)                                 # one entry for the whole call, not one per batch
    out, i = [], 0
    for length in lengths:
        out.append(tokens[i:i + length])
        i += length
    return out


async def tokens_of_slice(mpc, job) -> np.ndarray:
    """A worker's slice: its party's shares of the keys and of the PRF key, tokenised in its session."""
    keys, key, digits, batch, why = job
    sectype = token_field()
    field = sectype.field
    return await _tokens(mpc, sectype.array(field.array(keys)), sectype.array(field.array(key)),
                         digits, batch, why)


async def _tokens(mpc, k, s, digits: int, batch: int, why: str, done=None) -> np.ndarray:
    """The tokens of keys k under the PRF key s, a batch at a time."""
    n = k.shape[0]
    wide = digits * RESIDUE_BITS > 64
    tokens = np.zeros(n, dtype=object if wide else np.uint64)
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        symbols = await _symbols(mpc, k[lo:hi], s, digits, why)
        for j in range(digits):
            tokens[lo:hi] = tokens[lo:hi] * (1 << RESIDUE_BITS) + (symbols[:, j] if wide else
                                                                     symbols[:, j].astype(np.uint64))
        if done is not None:
            done(hi)
    return tokens


async def _symbols(mpc, k, s, digits: int, why: str) -> np.ndarray:
    """The d-th power residue symbols χ(k + s_j) of one batch of keys: batch × digits small ints."""
    sectype = k.sectype
    field = sectype.field
    p = int(field.modulus)
    d = 1 << RESIDUE_BITS
    n = k.shape[0]
    N = n * digits
    y = mpc.np_add(mpc.np_reshape(k, (n, 1)), mpc.np_reshape(s, (1, digits)))
    t = mpc.threshold
    masking, receivers = maskers(len(mpc.parties), t)
    # Masks: parties 0..t−1 each input ρ_i = r_i^d; their product is a random d-th power.
    masks = []
    for i in masking:
        mine = None
        if mpc.pid == i:
            r = uniform_below(p - 1, N) + 1
            mine = np.fromiter(map(int, gmpy2.powmod_base_list(list(r), d, p)), dtype=object, count=N)
        data = mine if mine is not None else np.zeros(N, dtype=object)
        masks.append(mpc.np_reshape(mpc.input(sectype.array(field.array(data)), senders=i), (n, digits)))
    for mask in masks[:-1]:
        y = mpc.np_multiply(y, mask)                                     # t − 1 resharing rounds
    if t > 0 and not mpc.options.no_prss:
        # The last product is opened as a degree-2t sharing, re-randomised by a PRZS.
        y_sh, last_sh = await mpc.gather(y, masks[-1])
        z = runtime.pseudorandom_zero_shares(field, N)
        opened = await reveal(sectype.array(y_sh * last_sh + z.reshape((n, digits))), what="join tokens",
                              why=why, receivers=receivers, raw=True, _threshold=2 * t)
    else:
        opened = await reveal(mpc.np_multiply(y, masks[-1]), what="join tokens", why=why, receivers=receivers,
                              raw=True)
    values = None if opened is None else opened.value.reshape(-1)
    return (await shared_residue_logs(mpc, values, p, N, senders=receivers)).reshape(n, digits)
