"""Record keys: a long-lived secret 16-bit key per person, computed inside MPC.

A person's record key is the power-residue PRF of the person's key x (the 64-bit hash the
planner computes, in the join tokens' field, p ≡ 1 mod 2^16, sqlmpc/mpc/prf.py) under a
*federation key* K that no party knows:

    record key(x) = log χ(K + x),   χ(y) = y^((p−1)/2^16), a 2^16-th root of unity: 16 bits.

**The federation key** is the sum of one random share per party, K = Σ_i k_i: each party keeps
its own share k_i in its state directory (``record-key-share.json``, created on first use) and
inputs it to every perturbed query, so K is secret-shared and the same in every query — and
no party alone, nor any t of them, knows it.  Rotating any one party's share
(``sqlmpc keys rotate-record-key``) gives every person a new, unrelated record key.

**Sixteen bits, only a masked input opened.**  Parties 0..t each input a random nonzero ρ_i and,
as an integer, e_i = log χ(ρ_i); ρ = Π ρ_i is uniformly random and nonzero, and no t parties
know it or e = Σ e_i.  The parties open c = (K + x)·ρ, a uniformly random nonzero element
whatever x is, and since χ is multiplicative the record key is log χ(c) − e (mod 2^16): a
public number minus a secret sum, no further multiplication.  Per person: t+1 inputs of two
values, t + 1 multiplications, one opening (the Legendre PRF would need 16 of each); the
result is born in the engine's own secure integer type.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np

from sqlmpc.mpc.prf import residue_logs, shared_residue_logs
from sqlmpc.mpc.reveal import reveal
from sqlmpc.mpc.runtime import current, uniform_below

BITS = 16
SHARE_FILE = "record-key-share.json"
_SHARE_BYTES = 40          # a share: 320 random bits, reduced mod p (bias below 2^-190)


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
    words = [secrets.token_bytes(_SHARE_BYTES).hex()]
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


def key_bound(m: int) -> int:
    """|a record key as the engine holds it| (see :func:`record_keys`): below (t + 2)·2^16, t < m/2."""
    return ((m - 1) // 2 + 2) << BITS


async def record_keys(x, share: list[int], sectype):
    """Each person's record key, as an array of the engine's secure integer type ``sectype``.

    x: the persons' secret key hashes, an array of :func:`sqlmpc.mpc.prf.token_field`.  The value
    returned is e_c + (t+1)·2^16 − Σ e_i, which is ≡ the record key (mod 2^16) and non-negative:
    cell keys are taken mod 2^16, so the reduction is left to them.
    """
    mpc = current()
    keytype = type(x).sectype
    field = keytype.field
    p = int(field.modulus)
    n = x.shape[0]
    if n == 0:
        return sectype.array(np.zeros(0, dtype=object))
    K = None
    for i in range(len(mpc.parties)):          # K = Σ of every party's share
        mine = np.array([share[0] % p if mpc.pid == i else 0], dtype=object)
        k_i = mpc.input(keytype.array(field.array(mine)), senders=i)
        K = k_i if K is None else K + k_i
    y = x + K
    # The mask: parties 0..t each input a random nonzero ρ_i, and (as an integer) the discrete log
    # e_i of its symbol χ(ρ_i); no t parties know ρ = Π ρ_i (uniform on the nonzero elements)
    # nor e = Σ e_i, the log of χ(ρ).
    rho = logs = None
    for i in range(mpc.threshold + 1):
        mine_rho = mine_log = np.zeros(n, dtype=object)
        if mpc.pid == i:
            mine_rho = uniform_below(p - 1, n) + 1
            mine_log = residue_logs(mine_rho, p).astype(object)
        r_i = mpc.input(keytype.array(field.array(mine_rho)), senders=i)
        e_i = mpc.input(sectype.array(mine_log), senders=i)
        rho = r_i if rho is None else rho * r_i
        logs = e_i if logs is None else logs + e_i
    opened = await reveal(y * rho, what="record keys", raw=True,
                          why="power-residue PRF inputs masked by a random nonzero element: uniformly random "
                              "nonzero field elements, which tell nothing")
    symbols = (await shared_residue_logs(mpc, opened.value, p, n)).astype(object)
    return sectype.array(symbols + ((mpc.threshold + 1) << BITS)) - logs
