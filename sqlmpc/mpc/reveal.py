"""The reveal gateway: the only place in sqlmpc that opens secret values.

Every opening is recorded as an :class:`Opening` in the current :class:`Ledger`
(a contextvar, so concurrent queries in different tasks keep separate ledgers):

    with ledger_scope() as ledger:
        values = await reveal(x, what="cells passing the release rules", why="disclosure control")
    ledger.entries  # [Opening(what='cells passing the release rules', count=..., why=...)]

Opening outside a ledger scope raises :class:`UnrecordedOpening`.
``reveal_ratio`` releases only num/den (exactly, as Fractions), not num and den.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from sqlmpc.mpc import runtime


@dataclass(frozen=True)
class Opening:
    what: str
    count: int
    why: str


@dataclass
class Ledger:
    entries: list[Opening] = field(default_factory=list)

    def record(self, what: str, count: int, why: str) -> Opening:
        entry = Opening(what, int(count), why)
        self.entries.append(entry)
        return entry

    def coalesce(self, start: int) -> None:
        """Merge the entries from ``start`` on that open the same thing for the same reason
        (one call's batches) into one entry with their total count."""
        merged: list[Opening] = []
        for e in self.entries[start:]:
            if merged and (merged[-1].what, merged[-1].why) == (e.what, e.why):
                merged[-1] = Opening(e.what, merged[-1].count + e.count, e.why)
            else:
                merged.append(e)
        self.entries[start:] = merged

    def total(self) -> int:
        return sum(e.count for e in self.entries)


class UnrecordedOpening(RuntimeError):
    """A secret value would be opened outside a ledger scope."""


_current: contextvars.ContextVar[Ledger | None] = contextvars.ContextVar("sqlmpc_ledger", default=None)


@contextlib.contextmanager
def ledger_scope(ledger: Ledger | None = None):
    ledger = Ledger() if ledger is None else ledger
    token = _current.set(ledger)
    try:
        yield ledger
    finally:
        _current.reset(token)


def current_ledger() -> Ledger | None:
    return _current.get()


def _count(x) -> int:
    shape = getattr(x, "shape", None)
    if shape is not None:
        return int(np.prod(shape)) if len(shape) else 1
    return 1


async def reveal(x, *, what: str, why: str, receivers=None, _threshold: int | None = None, raw: bool = False):
    """Open secure array x (or a list of them) to `receivers` (default: all parties).

    Returns what mpc.output returns (numpy arrays of ints for secint arrays; with
    raw=True field arrays).  Non-receivers get None.  `_threshold` is for
    sqlmpc.mpc internals that open a degree-2t sharing (prf.py); do not use it
    elsewhere.
    """
    ledger = _current.get()
    if ledger is None:
        raise UnrecordedOpening(f"opening {what!r} outside a ledger scope")
    if not what or not why:
        raise ValueError("reveal needs a 'what' and a 'why'")
    mpc = runtime.current()
    items = x if isinstance(x, list) else [x]
    count = sum(_count(a) for a in items)
    ledger.record(what, count, why)
    if isinstance(x, list):
        return [await mpc.output(a, receivers=receivers, threshold=_threshold, raw=raw) for a in x]
    return await mpc.output(x, receivers=receivers, threshold=_threshold, raw=raw)


# -- exact ratios ------------------------------------------------------------

def rational_reconstruct(c: int, p: int, n_bound: int, d_bound: int) -> Fraction | None:
    """The unique n/d with n ≡ c·d (mod p), |n| <= n_bound, 0 < d <= d_bound (Wang).

    Unique when 2·n_bound·d_bound < p.  Returns None if there is none.
    """
    r0, r1 = p, c % p
    s0, s1 = 0, 1
    while r1 > n_bound:
        q = r0 // r1
        r0, r1 = r1, r0 - q * r1
        s0, s1 = s1, s0 - q * s1
    if s1 == 0 or abs(s1) > d_bound:
        return None
    if s1 < 0:
        r1, s1 = -r1, -s1
    if (r1 - c * s1) % p:
        return None
    return Fraction(r1, s1)


async def reveal_ratio(num, den, *, what: str, why: str, bound: int) -> list[Fraction | None]:
    """Exact num/den per element, opening only the ratio.

    num, den: secure integer arrays of equal shape (same secure type) with
    |values| <= bound; the field modulus p must satisfy p > 2·bound².  A fresh
    secret random nonzero r is drawn per element; num·r and den·r are opened (the
    pair is uniform on the line through (num, den), i.e. it reveals num:den and
    nothing else), and num/den is recovered by field division and rational
    reconstruction.  den = 0 gives None.  Ledger: one entry of 2·n values.
    """
    mpc = runtime.current()
    sectype = type(num).sectype if hasattr(type(num), "sectype") else type(num)
    field_ = sectype.field
    p = int(field_.modulus)
    bound = int(bound)
    if bound < 1:
        bound = 1
    if not p > 2 * bound * bound:
        raise ValueError(f"reveal_ratio: field modulus ({p.bit_length()} bits) too small for "
                         f"|values| <= {bound} (need p > 2·B²); use a larger secure type")
    if num.shape != den.shape or len(num.shape) != 1:
        raise ValueError("reveal_ratio expects two 1-D secure arrays of equal length")
    n = num.shape[0]
    if n == 0:
        return []
    r = runtime.np_randoms(sectype, n)
    # Nonzero r: P[r = 0] = n/p (< 2^-60 for the fields in use); a zero r would show
    # up as den·r = 0 and is detected below by num·r = den·r = 0 only if both are 0.
    masked = mpc.np_multiply(mpc.np_stack([num, den]), mpc.np_stack([r, r]))
    opened = await reveal(masked, what=what, why=why, raw=True)
    a = [int(v) for v in opened.value[0]]
    b = [int(v) for v in opened.value[1]]
    out: list[Fraction | None] = []
    for ai, bi in zip(a, b):
        if bi == 0:
            out.append(None)
            continue
        c = ai * pow(bi, -1, p) % p
        f = rational_reconstruct(c, p, bound, bound)
        if f is None:
            raise ValueError("reveal_ratio: value outside the declared bound")
        out.append(f)
    return out
