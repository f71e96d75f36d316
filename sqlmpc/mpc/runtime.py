"""The one door to MPyC's internals: its global runtime, private helpers and patches.

MPyC keeps one *global* runtime (``mpyc.runtime.mpc``; the modules sectypes,
asyncoro, random, ... hold their own reference).  Everything in sqlmpc that
needs more than MPyC's public API — building and installing a runtime for a
session, the PRSS keys and program counter behind pseudorandom sharing, fresh
secret randoms, the message exchanger the watchdog hooks, the ``pickle`` name the
restricted unpickler replaces, bulk randomness for secret sharing — goes through
this module.  ``INTERNALS`` lists what is relied on; a test checks it against the
installed MPyC, whose version pyproject.toml pins to the tested minor release.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import itertools
import os
import sys

import numpy as np

RUNTIME_MODULES = ("sectypes", "asyncoro", "mpctools", "seclists", "secpols",
                   "secgroups", "random", "statistics")

# (module, attribute) pairs of MPyC that are not its public API.
INTERNALS = (
    ("mpyc.runtime", "Runtime._np_randoms"), ("mpyc.runtime", "Runtime._prss_uci"),
    ("mpyc.runtime", "Runtime.prfs"), ("mpyc.runtime", "Party"), ("mpyc.runtime", "pickle"),
    ("mpyc.thresha", "np_random_split"),
    ("mpyc.thresha", "_recombination_vector"), ("mpyc.thresha", "_f_S_i"), ("mpyc.runtime", "Runtime._reshare"),
    ("mpyc.asyncoro", "MessageExchanger.data_received"), ("mpyc.asyncoro", "MessageExchanger.connection_lost"),
    ("mpyc.asyncoro", "exception_handler"), ("mpyc.asyncoro", "MessageExchanger.buffers"),
)


def module(name: str):
    """An MPyC module (``"runtime"``, ``"thresha"``, ``"asyncoro"``, ...), imported without
    letting ``mpyc.runtime``'s import-time setup() parse our argv."""
    if "mpyc.runtime" not in sys.modules:
        saved = sys.argv
        sys.argv = [saved[0] if saved else "sqlmpc", "--no-log"]
        try:
            importlib.import_module("mpyc.runtime")   # runs setup() once, on a 1-party runtime
        finally:
            sys.argv = saved
    return importlib.import_module(f"mpyc.{name}")


def loaded() -> bool:
    """Whether MPyC has been imported in this process (a party before its first query has not)."""
    return "mpyc.runtime" in sys.modules


def current():
    """The runtime of the session under way (the global one MPyC's secure types use)."""
    return module("runtime").mpc


def missing_internals() -> list[str]:
    """The entries of INTERNALS the installed MPyC lacks (should be [])."""
    missing = []
    for mod_name, path in INTERNALS:
        obj = importlib.import_module(mod_name)
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            missing.append(f"{mod_name}.{path}")
    return missing


# -- sessions ----------------------------------------------------------------------


def make_options(m: int, *, threshold: int | None = None, sec_param: int = 30,
                 bit_length: int = 32, no_prss: bool = False, log: bool = False):
    """The option namespace MPyC's Runtime reads (what setup() would build from argv)."""
    if threshold is None:
        threshold = (m - 1) // 2
    if not 0 <= 2 * threshold < m:
        raise ValueError(f"threshold {threshold} too large for {m} parties")
    return argparse.Namespace(
        VERSION=False, HELP=False, help=False, config=None, parties=None, M=m, index=None,
        threshold=threshold, base_port=None, ssl=False, workers=0, bit_length=bit_length,
        sec_param=sec_param, log_level="info", no_log=not log, no_async=(m == 1),
        no_barrier=False, no_gmpy2=False, no_numpy=False, no_uvloop=False, no_prss=no_prss,
        mix32_64bit=False, output_windows=False, output_file=False, f="")


def new_runtime(pid: int, addresses: list[tuple[str, int]], options):
    """A fresh Runtime for party ``pid`` of the parties at ``addresses`` (not yet installed)."""
    runtime_mod = module("runtime")
    parties = [runtime_mod.Party(i, h, p) for i, (h, p) in enumerate(addresses)]
    return runtime_mod.Runtime(pid, parties, options)


def install_runtime(rt) -> None:
    """Make rt the global MPyC runtime (as mpyc.runtime.setup() does)."""
    module("runtime").mpc = rt
    for name in RUNTIME_MODULES:
        module(name).runtime = rt


def exception_handler():
    """MPyC's asyncio exception handler (it stops the loop on an exception in a callback)."""
    return module("asyncoro").exception_handler


def message_exchanger():
    """MPyC's protocol class for a peer connection."""
    return module("asyncoro").MessageExchanger


# -- private helpers of the running runtime -------------------------------------------


def awaited_peers() -> set[int]:
    """The peers this party is waiting on a message from (MPyC keeps a Future per expected message
    in the peer's MessageExchanger until the message arrives)."""
    mpc = current()
    return {party.pid for party in mpc.parties if party.pid != mpc.pid and party.protocol is not None
            and any(isinstance(x, asyncio.Future) and not x.done() for x in party.protocol.buffers.values())}


def lost_peers(mpc=None) -> set[int]:
    """The peers a runtime (default: the current one) has no connection to: never made, or lost
    (MPyC unsets a peer's protocol when its connection ends)."""
    mpc = mpc or current()
    return {party.pid for party in mpc.parties if party.pid != mpc.pid and party.protocol is None}


def np_randoms(sectype, n: int, bound: int | None = None):
    """n secret uniformly random elements of sectype, unknown to every party (below ``bound``, a power
    of two, when given)."""
    return current()._np_randoms(sectype, n, bound)


def prss_uci():
    """The PRSS counter: the same at all parties, fresh per call (MPyC's program counter)."""
    return current()._prss_uci()


def prss_keys() -> dict:
    """This party's PRSS keys, by the subset of parties sharing each."""
    return current()._prss_keys


def pseudorandom_zero_shares(field, N: int):
    """This party's shares of N pseudorandom degree-2t sharings of zero (PRZS), without
    communication: MPyC's construction (thresha.np_pseudorandom_share_0), Σ over the subsets S
    of m−t parties that hold a PRSS key of r_S·f_S(i)·g(i), with the r_S drawn in bulk from
    SHAKE-128(key_S ‖ tag ‖ uci) with 64 bits beyond the modulus and one reduction per share
    (about twice as fast as MPyC's draw of one reduced value at a time)."""
    mpc = current()
    thresha = module("thresha")
    p, m, i = field.modulus, len(mpc.parties), mpc.pid
    uci = mpc._prss_uci()
    width = (int(p).bit_length() + 7) // 8 + _EXTRA_BYTES
    total = None
    for S, prf in mpc.prfs(field.order).items():
        d = m - len(S)
        f_S_i = int(thresha._f_S_i(field, m, i, S))
        r = _ints(hashlib.shake_128(prf.key + _PRZS_TAG + uci).digest(width * N * d), width, N * d).reshape(N, d)
        coefficients = np.array([f_S_i * (i + 1) ** j % p for j in range(1, d + 1)], dtype=object)
        part = r @ coefficients if d > 1 else r[:, 0] * coefficients[0]
        total = part if total is None else total + part
    total %= p
    return field.array(total, check=False)


def recombination_vector(field, ids: tuple[int, ...], x: int = 0):
    """Lagrange coefficients to recombine shares held by parties ``ids`` (1-based) at x."""
    return module("thresha")._recombination_vector(field, ids, x)


# -- counting primitives (the benchmark's floor) ----------------------------------------


def _elements(x) -> tuple[int, int]:
    """(field bits, element count) of a secure or field array, or of a list of them."""
    if isinstance(x, (list, tuple)):
        if not x:
            return 0, 0
        bits, _ = _elements(x[0])
        return bits, sum(_elements(a)[1] for a in x)
    field = getattr(getattr(x, "sectype", None), "field", None) or getattr(x, "field", None)
    bits = int(field.order).bit_length() if field is not None else 0
    return bits, int(np.prod(getattr(x, "shape", ()) or (1,)))


def count_primitives(mpc) -> dict:
    """What this party's runtime does, by field size: ``counts[(kind, bits)]`` elements input
    (per sender), multiplied (reshared products) and opened.  Installed once per runtime; the
    counts run on (take differences)."""
    counts = getattr(mpc, "_sqlmpc_counts", None)
    if counts is not None:
        return counts
    counts = mpc._sqlmpc_counts = {}

    def wrap(name: str, kind: str, senders=lambda args, kwargs: 1):
        original = getattr(mpc, name)

        def counted(*args, **kwargs):
            bits, n = _elements(args[0])
            key = (kind, bits)
            counts[key] = counts.get(key, 0) + n * senders(args, kwargs)
            return original(*args, **kwargs)
        setattr(mpc, name, counted)

    def senders(args, kwargs):
        who = args[1] if len(args) > 1 else kwargs.get("senders")
        if who is None:
            return len(mpc.parties)
        return len(who) if isinstance(who, (list, tuple)) else 1

    wrap("input", "inputs", senders)
    wrap("_reshare", "multiplications")
    wrap("output", "openings")
    return counts


# -- patches ------------------------------------------------------------------------

_EXTRA_BYTES = 8    # 64 bits beyond the modulus: each value is within 2^-64 of uniform


_PRZS_TAG = b"sqlmpc/przs/v1"


def _ints(raw: bytes, width: int, count: int) -> np.ndarray:
    """``count`` little-endian integers of ``width`` bytes each from ``raw`` (object array): one
    C-level loop, no Python bytecode per value."""
    chunks = np.frombuffer(raw, dtype=f"V{width}", count=count).tolist()
    return np.fromiter(map(int.from_bytes, chunks, itertools.repeat("little")), dtype=object, count=count)


def uniform_below(order: int, count: int, *, reduced: bool = True) -> np.ndarray:
    """``count`` independent uniform integers in [0, order) (object array).

    ``reduced=False``: integers below 2^64·order instead, each within 2^-64 of uniform mod order,
    for a caller that reduces mod order anyway (one bigint remainder per value saved)."""
    width = (int(order).bit_length() + 7) // 8 + _EXTRA_BYTES
    values = _ints(os.urandom(width * count), width, count)
    if reduced:
        values %= order
    return values


def _np_random_split(field, s, t, m):
    """MPyC's ``thresha.np_random_split`` with bulk randomness (same shares, same distribution)."""
    p = field.modulus
    tp = type(p)
    if isinstance(s, field.array):
        s = s.value
    n = len(s)
    C = uniform_below(field.order, t * n, reduced=False).reshape(t, n)     # the shares are reduced below
    shares = np.empty((m, n), dtype=object)
    if t == 1:                     # s + i·c for i = 1..m: one addition per share, no products
        acc = s
        for i in range(m):
            acc = acc + C[0]
            shares[i] = acc
    else:                          # Horner at each point i = 1..m
        for i in range(1, m + 1):
            acc = C[t - 1]
            for k in range(t - 2, -1, -1):
                acc = acc * tp(i) + C[k]
            shares[i - 1] = acc * tp(i) + s
    return shares % p


def install_bulk_randomness() -> None:
    """Use one urandom call per array for MPyC's secret sharing of arrays (prime fields only)."""
    thresha = module("thresha")
    original = getattr(thresha, "_sqlmpc_original_np_random_split", thresha.np_random_split)
    thresha._sqlmpc_original_np_random_split = original

    def np_random_split(field, s, t, m):
        if isinstance(field.modulus, int):
            return _np_random_split(field, s, t, m)
        return original(field, s, t, m)            # extension fields keep MPyC's own code
    thresha.np_random_split = np_random_split


def install_pickle(shim) -> None:
    """Replace the ``pickle`` name MPyC unpickles peers' messages with (checked against mpyc 0.11)."""
    module("runtime").pickle = shim


def pickle_in_use():
    """What MPyC's runtime unpickles peers' messages with."""
    return module("runtime").pickle
