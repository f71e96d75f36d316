"""Restricted unpickling of MPyC peer messages.

MPyC 0.11 deserialises peer payloads with ``pickle.loads`` in exactly one
module, ``mpyc.runtime`` (``Runtime.transfer``, ``_distribute`` (input),
``output`` and ``_reshare`` for numpy-backed arrays); ``asyncoro`` only frames
bytes.  ``install()`` replaces the ``pickle`` name inside ``mpyc.runtime`` by a
shim whose ``loads`` uses :class:`RestrictedUnpickler` (``dumps`` is the normal
``pickle.dumps``), so every one of those call sites goes through the allow-list.

The allow-list was found by logging ``find_class`` during real 3-party runs of
input/output/multiplication/reshare on secure int arrays, ``mpc.transfer`` of
plain data, shuffle, residue_tokens and reveal_ratio (see tests): numpy arrays of
dtype object/int64 pickle as ``numpy._core.multiarray._reconstruct`` +
``numpy.ndarray`` + ``numpy.dtype``; object arrays hold Python ints (no global)
or gmpy2 ``mpz`` values (``gmpy2.from_binary``).  Nothing else is admitted.
"""

from __future__ import annotations

import io
import pickle
import sys
import types

from sqlmpc.mpc import runtime

# (module, name) pairs a legitimate MPyC message may reference.
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),      # numpy < 2 spelling
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("gmpy2", "from_binary"),
    ("gmpy2", "mpz"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "complex"),
    ("builtins", "bool"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "dict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("_codecs", "encode"),   # bytes pickled under protocol < 3 (not used by dumps default)
})

# Set to a list to record every find_class call (used to derive ALLOWED).
TRACE: list | None = None


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only globals in ALLOWED."""

    def find_class(self, module, name):
        if TRACE is not None:
            TRACE.append((module, name))
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global in peer message: {module}.{name}")
        return super().find_class(module, name)


def loads(data, /):
    """Drop-in for pickle.loads on untrusted peer data."""
    if isinstance(data, str):
        raise TypeError("peer message must be bytes")
    return RestrictedUnpickler(io.BytesIO(data)).load()


_shim = types.SimpleNamespace(dumps=pickle.dumps, loads=loads, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
                              DEFAULT_PROTOCOL=pickle.DEFAULT_PROTOCOL,
                              UnpicklingError=pickle.UnpicklingError, __name__="sqlmpc.mpc.unpickle.shim")

def install() -> None:
    """Route every pickle.loads in MPyC through RestrictedUnpickler (idempotent; MPyC's runtime
    is the only module of mpyc 0.11 that unpickles: installed_everywhere() checks it)."""
    runtime.install_pickle(_shim)


def installed() -> bool:
    """Whether MPyC unpickles peers' messages through the allow-list."""
    return runtime.pickle_in_use() is _shim


def installed_everywhere() -> list[str]:
    """Names of loaded mpyc modules that still hold the real pickle module (should be [])."""
    bad = []
    for name, mod in list(sys.modules.items()):
        if name.startswith("mpyc") and mod is not None:
            for attr, val in vars(mod).items():
                if val is pickle or val is pickle.loads or val is pickle.Unpickler:
                    bad.append(f"{name}.{attr}")
    return bad
