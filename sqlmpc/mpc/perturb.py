"""Cell-key perturbation inside MPC: the noise of sqlmpc.plan.perturbation, on secret values.

Input: the released cells' moments (secure arrays over the released cells), among them the
plan's ``cellkey`` moments (Σ of record keys over a contributor set) and, for sums, the
``sum2`` moments (Σ of squared contributions).  Output: the same moments with every target
perturbed.  Nothing is opened here: the cell keys, the noise and the exact values stay secret;
only the perturbed values are opened later, by the outputs, through the reveal gateway.

All targets and cells at once:

* the cell key: the sum of the target's ``cellkey`` moments, its 16 low bits (one secure bit
  decomposition), ck = Σ bits · 2^j;
* counts: noise = low + #{threshold ≤ ck}, one comparison per threshold of the table
  (18-bit comparisons: |ck − T| < 2^17); where the table has rows for small counts, the row
  is picked by comparing the true count with them;
* sums: the bits of S2 (one decomposition), their suffix OR in log-depth rounds gives the
  bit length L of S2 and m = 2^⌈L/2⌉ (as one-hot "top" flags); the noise
  ⌊(u − 2^15)·μ·m / 2^15⌋ with u = ck + 2^15 mod 2^16 is, per possible m, a public linear
  function of the bits of u — one multiplication per possible m selects it.
"""

from __future__ import annotations

import numpy as np

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
    bits = mpc.np_reshape(mpc.np_to_bits(raw, KEY_BITS), (len(targets), G, KEY_BITS))      # T × G × 16
    out = dict(moments)
    noise = {}
    if counts:
        values = [_convert(mpc, moments[targets[i].moment], small) for i in counts] if len(spec.table.rows) > 1 \
            else None
        noise.update(zip(counts, _count_noise(mpc, small, spec, [bits[i] for i in counts], values)))
    if sums:
        s2 = _convert(mpc, mpc.np_concatenate([moments[targets[i].s2] for i in sums]), small)
        noise.update(zip(sums, _magnitude_noise(mpc, small, spec, [bits[i] for i in sums],
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


def _magnitude_noise(mpc, sectype, spec: PerturbationSpec, bits: list, s2: list, s2_bounds: list) -> list:
    """Per sum target: ⌊(u − 2^15)·μ·m / 2^15⌋, m = 2^⌈L/2⌉ for L the bit length of its S2."""
    S, G = len(bits), bits[0].shape[0]
    L = max(1, max(int(b).bit_length() for b in s2_bounds))
    L += L % 2
    s2_bits = mpc.np_to_bits(mpc.np_reshape(mpc.np_stack(s2), (S * G,)), L)           # S·G × L
    # h_j = [S2 ≥ 2^j] = 1 − Π_{i ≥ j} (1 − bit_i): a suffix product in ⌈log2 L⌉ rounds.
    z = 1 - s2_bits
    step = 1
    while step < L:
        z = np.hstack([z[:, :L - step] * z[:, step:], z[:, L - step:]])
        step *= 2
    h = 1 - z
    # top_i = [⌈L/2⌉ = i + 1] = h_{2i} − h_{2i+2}
    pairs = L // 2
    h_even = h[:, 0:L:2]                                                              # S·G × pairs
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
