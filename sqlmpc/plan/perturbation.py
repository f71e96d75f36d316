"""The cell-key perturbation: its parameters, its table and the noise it gives (docs/disclosure.md).

Every person has a secret 16-bit *record key* (sqlmpc/mpc/record_keys.py).  A released value's
*cell key* is the sum, mod 2^16, of the record keys of the persons it rests on, so the same
persons always give the same cell key and the same noise: repeating or rephrasing a query
reveals nothing new, while adding or removing one person moves the cell key to an unrelated
place.  The noise is a function of the cell key, stated here once for the secure engine
(which evaluates it inside MPC) and for tests:

* **counts** — the perturbation table: a row of cumulative thresholds per true count n;
  ``noise = L + #{thresholds ≤ cell key}``, in [-D, D], mean 0, the configured variance, and
  never a released count below ``min_released_count``;
* **magnitudes** (sums, and the moments behind AVG, VAR, STDDEV, CORR, REGR) — uniform noise
  in [-μ·m, μ·m) with m the smallest power of two ≥ √S2, S2 = Σ c² of the persons'
  contributions c to the cell, so m ≥ the largest contribution: removing one person stays
  hidden however large the cell.  The uniform variate is the cell key rotated by half its
  range (independent of the count's), scaled by m.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

from sqlglot import exp

KEY_BITS = 16
KEY_RANGE = 1 << KEY_BITS


@dataclass(frozen=True)
class CellKeyPolicy:
    """The federation's perturbation parameters ([policy.cell_key]), with their defaults."""

    max_deviation: int = 2             # D: a released count differs from the true one by at most D
    variance: float = 1.0              # of a count's noise (where the table's support allows it)
    min_released_count: int = 1        # perturbed counts below this never appear (1: never zero)
    magnitude_deviation: float = 1.0   # μ: a sum's noise is below μ·m, m ∈ [√S2, 2·√S2); a power of two

    @property
    def magnitude_shift(self) -> int:
        """μ = 2^shift."""
        return int(round(math.log2(self.magnitude_deviation)))

    def as_dict(self) -> dict:
        return {"max_deviation": self.max_deviation, "variance": self.variance,
                "min_released_count": self.min_released_count, "magnitude_deviation": self.magnitude_deviation}


@dataclass(frozen=True)
class TableRow:
    """Noise for one true count (or every count from ``n`` on, for the last row)."""

    n: int
    low: int                            # the smallest noise value
    thresholds: tuple[int, ...]         # cumulative: noise = low + #{T ≤ cell key}
    probabilities: tuple[float, ...]    # of low, low+1, ..., after quantisation to 2^-16

    @property
    def mean(self) -> float:
        return sum((self.low + i) * p for i, p in enumerate(self.probabilities))

    @property
    def variance(self) -> float:
        m = self.mean
        return sum((self.low + i - m) ** 2 * p for i, p in enumerate(self.probabilities))

    def noise(self, cell_key: int) -> int:
        return self.low + sum(1 for t in self.thresholds if t <= cell_key)


@dataclass(frozen=True)
class PerturbationTable:
    rows: tuple[TableRow, ...]          # by n; the last row holds for every larger n

    def row(self, n: int) -> TableRow:
        for r in self.rows:
            if r.n == n:
                return r
        return self.rows[-1]

    def count_noise(self, n: int, cell_key: int) -> int:
        return self.row(n).noise(cell_key)


@functools.lru_cache(maxsize=32)      # every plan of a federation asks for the same table
def perturbation_table(policy: CellKeyPolicy, min_cell_size: int) -> PerturbationTable:
    """The table for released counts, which rest on at least ``min_cell_size`` persons.

    Counts from ``min_released_count + D`` on share one symmetric row; smaller ones (only when
    ``min_released_count > k − D``) get a row whose support keeps n + noise ≥ min_released_count,
    still with mean 0 and the variance where the support allows it.
    """
    D = policy.max_deviation
    first_full = max(min_cell_size, policy.min_released_count + D)
    rows = [_row(n, max(-D, policy.min_released_count - n), D, policy.variance)
            for n in range(min_cell_size, first_full)]
    rows.append(_row(first_full, -D, D, policy.variance))
    return PerturbationTable(tuple(rows))


def magnitude_noise(policy: CellKeyPolicy, s2: int, cell_key: int) -> int:
    """The noise of a sum whose persons' squared contributions sum to ``s2`` (plaintext statement).

    m = 2^⌈L/2⌉ for L the bit length of s2 (so √s2 < m ≤ 2·√s2); the uniform variate u is the
    cell key plus 2^15 mod 2^16; noise = ⌊(u − 2^15) · μ·m / 2^15⌋.
    """
    if s2 <= 0:
        return 0
    m = 1 << (-(-s2.bit_length() // 2))
    u = (cell_key + KEY_RANGE // 2) % KEY_RANGE
    shift = policy.magnitude_shift
    scaled = (u * m) << shift if shift >= 0 else (u * m) >> -shift
    return (scaled >> (KEY_BITS - 1)) - ((m << shift) if shift >= 0 else (m >> -shift))


def magnitude_bound(policy: CellKeyPolicy, s2: int) -> float:
    """|noise| of a sum is at most μ·m ≤ 2·μ·√S2."""
    return 2 * policy.magnitude_deviation * math.sqrt(max(s2, 0))


def validate(policy: CellKeyPolicy, min_cell_size: int) -> str | None:
    """Why the parameters cannot work, or None."""
    D = policy.max_deviation
    if D < 1 or D > 64:
        return f"max_deviation must be between 1 and 64, not {D}"
    if not 0 < policy.variance < D * D:
        return f"variance must lie strictly between 0 and max_deviation² = {D * D}, not {policy.variance}"
    if policy.min_released_count < 0:
        return f"min_released_count must be at least 0, not {policy.min_released_count}"
    if policy.min_released_count > min_cell_size:
        return (f"min_released_count ({policy.min_released_count}) cannot exceed min_cell_size "
                f"({min_cell_size}): a cell of exactly k persons would have no admissible value")
    mu = policy.magnitude_deviation
    if not mu > 0 or 2 ** round(math.log2(mu)) != mu or not -8 <= math.log2(mu) <= 8:
        return f"magnitude_deviation must be a power of two between 1/256 and 256 (0.25, 0.5, 1, 2, ...), not {mu}"
    return None


# -- the table's distributions ---------------------------------------------------

BISECTIONS = 64        # halvings of an interval of width ≤ 100: far below the table's 2^-16 resolution

def _row(n: int, low: int, high: int, variance: float) -> TableRow:
    """Maximum-entropy distribution on [low, high] with mean 0 and the variance (or as much as fits)."""
    values = list(range(low, high + 1))
    if low >= 0 or high <= 0:
        probs = [1.0 if v == 0 else 0.0 for v in values]
    else:
        target = min(variance, 0.9 * (-low) * high)     # the two-point extreme has variance −low·high
        probs = _max_entropy(values, target)
    return _quantise(n, low, probs)


def _max_entropy(values: list[int], variance: float) -> list[float]:
    """p(v) ∝ exp(a·v − b·v²) with Σ p·v = 0 and Σ p·v² = variance (bisection in b, inner in a)."""

    def dist(a: float, b: float) -> list[float]:
        logs = [a * v - b * v * v for v in values]
        top = max(logs)
        w = [math.exp(x - top) for x in logs]
        s = sum(w)
        return [x / s for x in w]

    def centred(b: float) -> list[float]:
        lo, hi = -50.0, 50.0
        for _ in range(BISECTIONS):
            a = (lo + hi) / 2
            if sum(p * v for p, v in zip(dist(a, b), values)) > 0:
                hi = a
            else:
                lo = a
        return dist((lo + hi) / 2, b)

    lo, hi = -20.0, 20.0           # larger b: smaller variance
    for _ in range(BISECTIONS):
        b = (lo + hi) / 2
        p = centred(b)
        if sum(q * v * v for q, v in zip(p, values)) > variance:
            lo = b
        else:
            hi = b
    return centred((lo + hi) / 2)


def _quantise(n: int, low: int, probs: list[float]) -> TableRow:
    """Cumulative thresholds in units of 2^-16 (the cell key's resolution)."""
    thresholds, cumulative = [], 0.0
    for p in probs[:-1]:
        cumulative += p
        thresholds.append(min(KEY_RANGE, max(0, round(cumulative * KEY_RANGE))))
    edges = [0] + thresholds + [KEY_RANGE]
    quantised = tuple((b - a) / KEY_RANGE for a, b in zip(edges, edges[1:]))
    # Thresholds of values that cannot occur (probability 0 at either end) are dropped by the engine
    # only if they equal 0 or 2^16; keep them all: comparisons against them are exact either way.
    return TableRow(n, low, tuple(thresholds), quantised)


# -- what a perturbed plan perturbs -----------------------------------------------


@dataclass(frozen=True)
class Target:
    """One released moment and how it is perturbed.

    ``keys`` are the plan's ``cellkey`` moments (Σ of record keys over a set of persons) whose
    sum mod 2^16 is the moment's cell key: the contributor sets of the aggregate it serves, so
    that a person who could change its value changes its noise.  ``s2`` (magnitudes) is the
    ``sum2`` moment of the same expression: Σ over persons of their contribution squared.
    """

    moment: str
    kind: str                        # "count" | "magnitude"
    keys: tuple[str, ...]
    s2: str | None = None


@dataclass(frozen=True)
class PerturbationSpec:
    policy: CellKeyPolicy
    table: PerturbationTable
    targets: tuple[Target, ...]

    def canonical(self) -> dict:
        return {"policy": self.policy.as_dict(),
                "targets": [[t.moment, t.kind, list(t.keys), t.s2] for t in self.targets]}

    def inflate(self, bounds: dict[str, int]) -> dict[str, int]:
        """Bounds of the perturbed moments (they set the field size of exact ratios)."""
        out = dict(bounds)
        for t in self.targets:
            b = out[t.moment]
            out[t.moment] = b + self.policy.max_deviation if t.kind == "count" else \
                b + 2 * max(1, math.ceil(self.policy.magnitude_deviation)) * b + 1
        return out


# -- what the analyst is told ------------------------------------------------------------

PERTURBED_KEY = b"sqlmpc.perturbed"     # Arrow schema metadata: JSON list of perturbed columns


def perturbed_metadata(spec: PerturbationSpec, outputs) -> dict:
    """Cell-table metadata naming the outputs (a0, a1, ...) computed from perturbed moments."""
    targets = {t.moment for t in spec.targets}
    names = [f"a{j}" for j, formula in enumerate(outputs)
             if any(c.table == "M" and c.name in targets for c in formula.find_all(exp.Column))]
    return {PERTURBED_KEY: json.dumps(names).encode()}


def perturbed_columns(table) -> list[str]:
    """The columns of an Arrow table that its metadata marks as perturbed."""
    meta = table.schema.metadata or {}
    return json.loads(meta[PERTURBED_KEY]) if PERTURBED_KEY in meta else []
