"""Bulk cryptographic randomness for secret sharing.

MPyC draws each random polynomial coefficient of an input with its own
``secrets.randbelow`` call (one ``os.urandom`` system call per element);
at 10^5–10^6 elements that dominates the cost of an input.  Here one
``os.urandom`` call yields all of them: each value takes 64 bits more than
the modulus and is reduced, so its distance from uniform is below 2^-64.
"""

from __future__ import annotations

import os

import numpy as np

_EXTRA_BYTES = 8


def uniform_below(order: int, count: int) -> np.ndarray:
    """``count`` independent uniform integers in [0, order) (object array)."""
    width = (int(order).bit_length() + 7) // 8 + _EXTRA_BYTES
    buf = os.urandom(width * count)
    from_bytes = int.from_bytes
    return np.fromiter((from_bytes(buf[i:i + width], "little") % order for i in range(0, width * count, width)),
                       dtype=object, count=count)


def _np_random_split(field, s, t, m):
    """MPyC's ``thresha.np_random_split`` with bulk randomness (same shares, same distribution)."""
    p = field.modulus
    tp = type(p)
    if isinstance(s, field.array):
        s = s.value
    n = len(s)
    C = uniform_below(field.order, t * n).reshape(t, n)
    V = np.vander(np.array([tp(i) for i in range(1, m + 1)], dtype="O"), N=t + 1, increasing=True)
    return (V @ np.concatenate((s.reshape(1, n), C))) % p


def install() -> None:
    """Use bulk randomness for MPyC's secret sharing of arrays (prime fields only)."""
    from mpyc import thresha

    original = getattr(thresha, "_sqlmpc_original_np_random_split", thresha.np_random_split)
    thresha._sqlmpc_original_np_random_split = original

    def np_random_split(field, s, t, m):
        if isinstance(field.modulus, int):
            return _np_random_split(field, s, t, m)
        return original(field, s, t, m)            # extension fields keep MPyC's own code
    thresha.np_random_split = np_random_split
