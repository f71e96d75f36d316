"""Record keys: a long-lived secret 16-bit key per person, computed inside MPC.

A person's record key is 16 bits of the Legendre PRF of the person's key x (the 64-bit hash
the planner computes) under a *federation key* K_1..K_16 that no party knows:

    bit_j(x) = [ χ(K_j + x) = 1 ],   χ the quadratic character of a fixed 128-bit prime field.

**The federation key** is the sum of one random share per party, K = Σ_i k_i: each party keeps
its own share k_i in its state directory (``record-key-share.json``, created on first use) and
inputs it to every perturbed query, so K is secret-shared and the same in every query — and
no party alone, nor any t of them, knows it.  Rotating any one party's share
(``sqlmpc keys rotate-record-key``) gives every person a new, unrelated record key.

**One bit, only its secret opened.**  For y = K_j + x the parties form a secret uniformly random
nonzero mask ρ together with its character s = χ(ρ) = ±1: parties 0..t each input a random
nonzero ρ_i and σ_i = χ(ρ_i), and ρ = Π ρ_i, s = Π σ_i (no t parties know ρ or s).  They open
c = y·ρ, a uniformly random nonzero element whatever y is.  Since χ is multiplicative,
χ(y) = χ(c)·s, and the secret bit is (1 + χ(c)·s)/2 — linear in s, no further multiplication.
Per bit: 2(t+1) inputs, 2t + 1 multiplications, one opening; all persons' 16 bits at once.
(The brief's variant, a random sign times a random square, needs p ≡ 3 (mod 4) so that −1 is a
non-residue; this one works in any odd prime field and skips the secure random bits.)
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np

BITS = 16
FIELD_BITS = 128
SHARE_FILE = "record-key-share.json"
_SHARE_BYTES = 40          # each share word: 320 random bits, reduced mod p (bias below 2^-190)


# -- each party's share of the federation key (its state directory) ---------------


def share_path(state: str | Path) -> Path:
    return Path(state) / SHARE_FILE


def party_state(federation_path: str | Path | None, party: str) -> Path:
    """A party's state directory, as the embedded federation lays it out: ``$SQLMPC_STATE/<party>``,
    else ``sqlmpc-state/<party>`` next to the federation file (``sqlmpc serve --state`` in a network)."""
    base = os.environ.get("SQLMPC_STATE")
    if base is None:
        base = (Path(federation_path).resolve().parent if federation_path else Path.cwd()) / "sqlmpc-state"
    return Path(base) / party


def load_share(state: str | Path) -> list[int]:
    """This party's share of the federation key, created (atomically) on first use."""
    path = share_path(state)
    if not path.exists():
        try:
            _write_share(path, exclusive=True)
        except FileExistsError:
            pass                               # another process of this party created it first
    data = json.loads(path.read_text())
    return [int(w, 16) for w in data["share"]]


def rotate_share(state: str | Path) -> Path:
    """Replace this party's share: every record key changes (to one unrelated to the old)."""
    path = share_path(state)
    _write_share(path, exclusive=False)
    return path


def _write_share(path: Path, *, exclusive: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    words = [secrets.token_bytes(_SHARE_BYTES).hex() for _ in range(BITS)]
    text = json.dumps({"version": 1, "share": words}, indent=1) + "\n"
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if exclusive:
        os.link(tmp, path)                     # fails if the file exists: never overwrite a share
        os.unlink(tmp)
    else:
        os.replace(tmp, path)


# -- the PRF inside MPC -------------------------------------------------------------


def record_key_type():
    """The fixed secure type of the PRF: its field must not change between queries."""
    from sqlmpc.mpc.runtime import current

    mpc = current()
    sectype = mpc.SecInt(FIELD_BITS)
    assert int(sectype.field.modulus) % 4 == 3, "the record-key field needs p ≡ 3 (mod 4)"
    return sectype


async def record_keys(x, share: list[int]):
    """Secret 16-bit record keys (an array of ``record_key_type()``) of the secret person keys x."""
    import gmpy2

    from sqlmpc.mpc.reveal import reveal
    from sqlmpc.mpc.runtime import current, uniform_below

    mpc = current()

    sectype = record_key_type()
    p = int(sectype.field.modulus)
    n = x.shape[0]
    if n == 0:
        return x
    K = None
    for i in range(len(mpc.parties)):          # K = Σ of every party's share
        mine = np.array([w % p for w in share], dtype=object) if mpc.pid == i else np.zeros(BITS, dtype=object)
        k_i = mpc.input(sectype.array(mine), senders=i)
        K = k_i if K is None else K + k_i
    N = n * BITS
    y = mpc.np_reshape(mpc.np_reshape(x, (n, 1)) + mpc.np_reshape(K, (1, BITS)), (N,))
    # The mask: parties 0..t each input a random nonzero ρ_i and its character σ_i = χ(ρ_i); no t
    # parties know ρ = Π ρ_i (uniform on the nonzero elements) nor s = Π σ_i = χ(ρ).
    rho = signs = None
    for i in range(mpc.threshold + 1):
        mine_rho = mine_sign = np.zeros(N, dtype=object)
        if mpc.pid == i:
            mine_rho = uniform_below(p - 1, N) + 1
            mine_sign = np.fromiter((int(gmpy2.legendre(int(v), p)) % p for v in mine_rho), dtype=object, count=N)
        r_i = mpc.input(sectype.array(sectype.field.array(mine_rho)), senders=i)
        s_i = mpc.input(sectype.array(sectype.field.array(mine_sign)), senders=i)
        rho = r_i if rho is None else rho * r_i
        signs = s_i if signs is None else signs * s_i
    c = y * rho
    opened = await reveal(c, what="record keys", raw=True,
                          why="Legendre PRF inputs masked by a random nonzero element: uniformly random "
                              "nonzero field elements, which tell nothing")
    chi = np.fromiter((int(gmpy2.legendre(int(v), p)) for v in opened.value), dtype=object, count=N)
    inverse_two = (p + 1) // 2
    bits = (signs * chi + 1) * inverse_two                       # (1 + χ(y)) / 2
    weights = np.array([1 << j for j in range(BITS)], dtype=object)
    return mpc.np_reshape(bits, (n, BITS)) @ weights
