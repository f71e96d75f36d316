"""Cell-key perturbation inside MPC: the noise of sqlmpc.plan.perturbation, on secret values.

Input: the released cells' moments (secure arrays over the released cells), among them the
plan's ``cellkey`` moments (Σ of record keys over a contributor set) and, for sums, the
``sum2`` moments (Σ of squared contributions).  Output: the same moments with every target
perturbed.  Nothing is opened here: the cell keys, the noise and the exact values stay secret;
only the perturbed values are opened later, by the outputs, through the reveal gateway.

All targets and cells at once:

* the cell key: the sum of the target's ``cellkey`` moments, its 16 low bits (one secure bit
  decomposition, :func:`low_bits`), ck = Σ bits · 2^j;
* counts: noise = low + #{threshold ≤ ck}, one comparison per threshold of the table
  (18-bit comparisons: |ck − T| < 2^17); where the table has rows for small counts, the row
  is picked by comparing the true count with them;
* sums: the bits of S2 (one decomposition), their suffix OR in log-depth rounds gives the
  bit length L of S2 and m = 2^⌈L/2⌉ (as one-hot "top" flags); the noise
  ⌊(u − 2^15)·μ·m / 2^15⌋ with u = ck + 2^15 mod 2^16 is, per possible m, a public linear
  function of the bits of u — one multiplication per possible m selects it.

**Bit decompositions** (:func:`low_bits`) open x + r for a secret r whose l low bits are secret
random bits and whose high part is a secret random number k bits wider than x (statistical
hiding, as in MPyC's own comparisons); the bits of x are then those of (c − r) mod 2^l: a
subtraction of secret bits from public ones, whose borrows are a parallel prefix (Kogge–Stone,
⌈log2 l⌉ rounds of whole-array multiplications).  MPyC's np_to_bits does the same with a
recursive adder of many small operations: twice as slow here (25 values of 108 bits: 1.8 s, 0.85 s).
"""

from __future__ import annotations

import numpy as np

from sqlmpc.mpc import runtime
from sqlmpc.mpc.reveal import reveal
from sqlmpc.plan.perturbation import KEY_BITS, PerturbationSpec

_COMPARE_BITS = KEY_BITS + 2


async def perturb_moments(mpc, spec: PerturbationSpec, moments: dict, bounds: dict) -> dict:
    """The moments of the released cells, each target replaced by its perturbed value."""
    targets = spec.targets
    if not targets:
        return moments
    any_moment = moments[targets[0].moment]
    G = any_moment.shape[0]
    if G == 0:
        return moments
    sectype = type(any_moment).sectype
    counts = [i for i, t in enumerate(targets) if t.kind == "count"]
    sums = [i for i, t in enumerate(targets) if t.kind == "magnitude"]
    # All the noise arithmetic in a type just wide enough: the cell type of exact ratios can be
    # several times wider, and a bit decomposition costs a secure random bit per bit of the type.
    widest = max([sum(bounds[k] for k in t.keys) for t in targets]
                 + [bounds[targets[i].moment] for i in counts] + [bounds[targets[i].s2] for i in sums])
    small = mpc.SecInt(max(_COMPARE_BITS, widest.bit_length()) + 2)
    small = sectype if small.bit_length >= sectype.bit_length else small
    raw = _convert(mpc, mpc.np_concatenate([_sum(moments[k] for k in t.keys) for t in targets]), small)
    bits = mpc.np_reshape(await low_bits(mpc, raw, KEY_BITS, widest.bit_length()), (len(targets), G, KEY_BITS))
    out = dict(moments)
    noise = {}
    if counts:
        values = [_convert(mpc, moments[targets[i].moment], small) for i in counts] if len(spec.table.rows) > 1 \
            else None
        noise.update(zip(counts, _count_noise(mpc, small, spec, [bits[i] for i in counts], values)))
    if sums:
        s2 = _convert(mpc, mpc.np_concatenate([moments[targets[i].s2] for i in sums]), small)
        noise.update(zip(sums, await _magnitude_noise(mpc, small, spec, [bits[i] for i in sums],
                                                [s2[j * G:(j + 1) * G] for j in range(len(sums))],
                                                [bounds[targets[i].s2] for i in sums])))
    back = _convert(mpc, mpc.np_concatenate([noise[i] for i in range(len(targets))]), sectype)
    for i, t in enumerate(targets):
        out[t.moment] = moments[t.moment] + back[i * G:(i + 1) * G]
    return out


def _convert(mpc, x, sectype):
    """A secure array in another secure integer type (its values fit)."""
    if type(x).sectype is sectype:
        return x
    return mpc.np_fromlist(mpc.convert([x[i] for i in range(x.shape[0])], sectype))


def _sum(arrays):
    arrays = list(arrays)
    total = arrays[0]
    for a in arrays[1:]:
        total = total + a
    return total


def _count_noise(mpc, sectype, spec: PerturbationSpec, bits: list, values: list) -> list:
    """Per count target (G cells each): the table's noise for its cell key (and true count)."""
    C, G = len(bits), bits[0].shape[0]
    weights = np.array([1 << j for j in range(KEY_BITS)], dtype=object)
    ck = mpc.np_stack([b @ weights for b in bits])                                    # C × G
    rows = spec.table.rows
    thresholds = [t for r in rows for t in r.thresholds]
    T = np.array(thresholds, dtype=object).reshape(-1, 1, 1)
    below = mpc.np_sgn(mpc.np_reshape(ck, (1, C, G)) - T, l=_COMPARE_BITS, LT=True)  # [ck < T]
    noise_of_row, at = [], 0
    for r in rows:
        n = len(r.thresholds)
        noise_of_row.append(r.low + n - _sum(below[at + i] for i in range(n)) if n else
                            sectype.array(np.full((C, G), r.low, dtype=object)))
        at += n
    if len(rows) == 1:
        return [noise_of_row[0][c] for c in range(C)]
    # Small counts have rows of their own: [value < n+1] − [value < n] picks row n; the last
    # row holds from its n on.  Released counts are at least k = rows[0].n.
    value = mpc.np_stack(values)
    limits = np.array([r.n + 1 for r in rows[:-1]], dtype=object).reshape(-1, 1, 1)
    less = mpc.np_sgn(mpc.np_reshape(value, (1, C, G)) - limits, LT=True)           # [value ≤ n]
    noise, previous = 0, 0
    for i, r in enumerate(rows[:-1]):
        noise = noise + (less[i] - previous) * noise_of_row[i]
        previous = less[i]
    noise = noise + (1 - previous) * noise_of_row[-1]
    return [noise[c] for c in range(C)]


async def _magnitude_noise(mpc, sectype, spec: PerturbationSpec, bits: list, s2: list, s2_bounds: list) -> list:
    """Per sum target: ⌊(u − 2^15)·μ·m / 2^15⌋, m = 2^⌈L/2⌉ for L the bit length of its S2.

    Targets whose S2 have the same bound share one decomposition, as wide as that bound (the S2
    behind a STDDEV's Σx² needs about 1.4 times the bits of the one behind Σx).
    """
    widths = [max(2, int(b).bit_length()) for b in s2_bounds]
    widths = [w + w % 2 for w in widths]
    noise = [None] * len(bits)
    for L in sorted(set(widths)):
        group = [i for i, w in enumerate(widths) if w == L]
        values = await _magnitude_group(mpc, sectype, spec, [bits[i] for i in group], [s2[i] for i in group], L)
        for i, v in zip(group, values):
            noise[i] = v
    return noise


async def _magnitude_group(mpc, sectype, spec: PerturbationSpec, bits: list, s2: list, L: int) -> list:
    """The noise of sum targets whose S2 are below 2^L (L even)."""
    S, G = len(bits), bits[0].shape[0]
    s2_bits = await low_bits(mpc, mpc.np_reshape(mpc.np_stack(s2), (S * G,)), L, L)  # S·G × L
    # h_{2i} = [S2 ≥ 4^i] = 1 − Π_{i' ≥ i} (1 − d_i'), d_i = bit_2i OR bit_2i+1 (base-4 digit ≠ 0):
    # a suffix product over the L/2 digits in ⌈log2 L/2⌉ rounds.
    pairs = L // 2
    low, high = s2_bits[:, 0:L:2], s2_bits[:, 1:L:2]
    z = (1 - low) * (1 - high)                                                        # [digit = 0]
    step = 1
    while step < pairs:
        z = np.hstack([z[:, :pairs - step] * z[:, step:], z[:, pairs - step:]])
        step *= 2
    h_even = 1 - z                                                                    # S·G × pairs
    # top_i = [⌈L/2⌉ = i + 1] = h_{2i} − h_{2i+2}
    zero = sectype.array(np.zeros((S * G, 1), dtype=object))
    top = h_even - np.hstack([h_even[:, 1:], zero])
    # u = ck + 2^15 mod 2^16: the top bit flipped.
    U = mpc.np_reshape(mpc.np_stack(bits), (S * G, KEY_BITS))
    flip = np.zeros(KEY_BITS, dtype=object)
    flip[KEY_BITS - 1] = 1
    U = U * (1 - 2 * flip) + flip
    shift = spec.policy.magnitude_shift
    coefficients = np.zeros((KEY_BITS, pairs), dtype=object)
    offsets = np.zeros(pairs, dtype=object)
    for i in range(pairs):
        e = i + 1 + shift                                  # μ·m = 2^e
        if e < 0:
            continue
        for j in range(KEY_BITS):
            if j + e - (KEY_BITS - 1) >= 0:
                coefficients[j, i] = 1 << (j + e - (KEY_BITS - 1))
        offsets[i] = 1 << e
    W = U @ coefficients - offsets                                                    # S·G × pairs
    noise = mpc.np_sum(top * W, axis=1)
    noise = mpc.np_reshape(noise, (S, G))
    return [noise[s] for s in range(S)]


async def low_bits(mpc, x, l: int, width: int):
    """The l low bits of each element of x (0 ≤ x < 2^width, width ≥ l), as an n × l secure array."""
    sectype = type(x).sectype
    n = x.shape[0]
    k = mpc.options.sec_param
    r = mpc.np_reshape(mpc.np_random_bits(sectype, n * l), (n, l))
    powers = np.array([1 << i for i in range(l)], dtype=object)
    high = runtime.np_randoms(sectype, n, 1 << (width - l + k))           # hides x's high part
    c = await reveal(x + r @ powers + high * (1 << l), what="noise bit decompositions",
                     why="cell keys and S2 plus secret random masks k bits wider: statistically uniform")
    c = np.array([int(v) % (1 << l) for v in np.asarray(c).reshape(-1)], dtype=object)
    cbits = (c.reshape(n, 1) >> np.arange(l)) & 1                           # public, n × l
    # x = (c − r) mod 2^l, bit by bit: the borrow into bit i+1 is g_i + p_i·(borrow into i), with
    # g_i = [c_i = 0, r_i = 1] and p_i = [c_i = r_i], both linear in r_i.
    g = r * (1 - cbits)
    p = _equal_bits(cbits, r)
    step = 1
    while step < l:                      # (g, p) ∘ (g', p') = (g + p·g', p·p') over ranges, in place
        product = mpc.np_multiply(mpc.np_stack([p[:, step:], p[:, step:]]), mpc.np_stack([g[:, :-step], p[:, :-step]]))
        g = np.hstack([g[:, :step], g[:, step:] + product[0]])
        p = np.hstack([p[:, :step], product[1]])
        step *= 2
    zero = sectype.array(np.zeros((n, 1), dtype=object))
    borrow = np.hstack([zero, g[:, :-1]])                                   # into bit i
    q = 1 - _equal_bits(cbits, r)                                           # c_i ⊕ r_i
    return q + borrow - 2 * q * borrow


def _equal_bits(cbits, r):
    """[c_i = r_i] for public bits c and secret bits r (linear in r)."""
    return 1 - cbits - r + r * (2 * cbits)
