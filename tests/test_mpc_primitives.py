"""Secure primitives (sqlmpc.mpc): session, reveal gateway, restricted unpickler, shuffle, PRF tokens.

Real 3-party MPyC sessions on loopback via run_parties (each party a spawned process).
Party functions are module-level coroutines so they can be pickled to the children.
"""

from __future__ import annotations

import os
import pickle
import random
from fractions import Fraction

import numpy as np
import pytest

from mpc_parties import PartyFailure, run_parties

pytestmark = pytest.mark.mpc


def _input(mpc, secint, values, owner):
    n = len(values)
    data = np.array(values, dtype=object) if mpc.pid == owner else np.zeros(n, dtype=object)
    return mpc.input(secint.array(data), senders=owner)


# -- session -----------------------------------------------------------------

async def _session_party(mpc, pid, addresses_unused=None):
    from mpyc import runtime

    from sqlmpc.mpc import unpickle
    assert runtime.mpc is mpc and mpc.pid == pid and len(mpc.parties) == 3 and mpc.threshold == 1
    assert unpickle.installed_everywhere() == []
    sizes = await mpc.transfer({"rows": 10 + pid})      # a control-style message (plain data)
    return [d["rows"] for d in sizes]


def test_session_basics():
    assert run_parties(_session_party) == [[10, 11, 12]] * 3


async def _repeated_sessions(addresses, pid):
    """One long-lived session running two queries, then two sessions per query, in one process."""
    from sqlmpc.mpc.reveal import reveal
    from sqlmpc.mpc.session import MpcSession
    outs = []
    session = MpcSession(pid, addresses, timeout=20)
    async with session as mpc:
        async def query(mpc, q):
            x = _input(mpc, mpc.SecInt(32), [q + 1], 0) * 2
            return int((await reveal(x, what="q", why="test"))[0])
        for q in range(2):
            outs.append(await session.run(query, q, timeout=10))
    for round_ in range(2):
        async with MpcSession(pid, addresses, timeout=20) as mpc:
            x = _input(mpc, mpc.SecInt(32), [10 + round_], 1) + 1
            outs.append(int((await reveal(x, what="q", why="test"))[0]))
    return outs


def test_several_queries_and_repeated_sessions():
    assert run_parties(_repeated_sessions, open_session=False) == [[2, 4, 11, 12]] * 3


async def _failing_party(mpc, pid):
    if pid == 2:
        raise RuntimeError("boom")
    secint = mpc.SecInt(32)
    from sqlmpc.mpc.reveal import reveal
    return await reveal(_input(mpc, secint, [1], 2), what="x", why="test")


def test_failure_propagates_quickly():
    with pytest.raises(PartyFailure, match="boom"):
        run_parties(_failing_party, timeout=20)


# -- reveal gateway ---------------------------------------------------------------

def test_reveal_outside_ledger_is_refused():
    import asyncio

    from sqlmpc.mpc.reveal import UnrecordedOpening, reveal
    with pytest.raises(UnrecordedOpening):
        asyncio.run(reveal(object(), what="x", why="y"))


def test_rational_reconstruction_plain():
    from sqlmpc.mpc.reveal import rational_reconstruct
    p = (1 << 61) - 1
    rng = random.Random(1)
    B = 1 << 30
    for _ in range(2000):
        a, b = rng.randint(-B, B), rng.randint(1, B)
        c = a * pow(b, -1, p) % p
        assert rational_reconstruct(c, p, B, B) == Fraction(a, b)


async def _ratio_party(mpc, pid, nums, dens, bound):
    from sqlmpc.mpc.reveal import current_ledger, reveal_ratio
    secint = mpc.SecInt(64)
    num, den = _input(mpc, secint, nums, 0), _input(mpc, secint, dens, 1)
    out = await reveal_ratio(num, den, what="avg", why="the result", bound=bound)
    try:
        await reveal_ratio(num, den, what="avg", why="x", bound=1 << 60)
        too_big = False
    except ValueError:
        too_big = True
    return out, current_ledger().entries, too_big


def test_reveal_ratio_exact():
    from sqlmpc.mpc.reveal import Opening
    rng = random.Random(7)
    B = 1 << 40
    nums = [rng.randint(-B, B) for _ in range(100)] + [0, 5, -5, 0]
    dens = [rng.randint(-B, B) for _ in range(100)] + [3, 0, 10, 0]
    res = run_parties(_ratio_party, args=(nums, dens, B))
    expect = [None if d == 0 else Fraction(a, d) for a, d in zip(nums, dens)]
    for out, ledger, too_big in res:
        assert out == expect
        assert ledger == [Opening("avg", 2 * len(nums), "the result")]
        assert too_big


# -- restricted unpickler -----------------------------------------------------------

class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Evil2:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_unpickler_rejects_code(tmp_path):
    from sqlmpc.mpc import unpickle
    from sqlmpc.mpc import runtime
    runtime_mod = runtime.module("runtime")
    unpickle.install()
    for evil in (_Evil(tmp_path / "pwned"), _Evil2(tmp_path / "pwned2")):
        payload = pickle.dumps(evil)
        with pytest.raises(pickle.UnpicklingError):
            runtime_mod.pickle.loads(payload)  # the very reference MPyC's message handlers use
        with pytest.raises(pickle.UnpicklingError):
            unpickle.loads(payload)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    # legitimate message shapes still load
    field_like = np.array([1 << 90, 3, -(1 << 70)], dtype=object)
    assert (unpickle.loads(pickle.dumps(field_like)) == field_like).all()
    assert unpickle.loads(pickle.dumps(np.arange(5, dtype=np.int64))).tolist() == list(range(5))
    assert unpickle.loads(pickle.dumps({"a/0": 3, "b": [1, (2, 3)]})) == {"a/0": 3, "b": [1, (2, 3)]}
    assert unpickle.installed_everywhere() == []


async def _evil_sender(mpc, pid, path):
    # party 1 sends a malicious pickle where MPyC expects a transfer payload
    obj = _Evil(path) if pid == 1 else 0
    return await mpc.transfer(obj)


def test_malicious_peer_message_rejected_in_session(tmp_path):
    path = str(tmp_path / "pwned")
    # the receivers' restricted unpickler raises UnpicklingError inside MPyC's coroutine,
    # which stops that party's event loop: the query fails for everyone, nothing runs
    with pytest.raises(PartyFailure, match="forbidden global in peer message: posix.system"):
        run_parties(_evil_sender, args=(path,), timeout=20)
    assert not os.path.exists(path)


# -- shuffle -------------------------------------------------------------------------

async def _shuffle_party(mpc, pid, n):
    from mpyc.runtime import mpc as global_mpc

    from sqlmpc.mpc import unpickle
    from sqlmpc.mpc.reveal import reveal
    from sqlmpc.mpc.shuffle import shuffle, subsets
    unpickle.TRACE = []
    s64, s32 = mpc.SecInt(64), mpc.SecInt(32)
    base = list(range(n))
    cols = [_input(mpc, s64, base, 0), _input(mpc, s64, [3 * v - 7 for v in base], 1),
            _input(mpc, s32, [v % 5 for v in base], 2)]
    traces, opened = [], []
    for _ in range(2):
        tr = {}
        out = await shuffle(cols, _trace=tr)
        traces.append(tr)
        opened.append([v.tolist() for v in await reveal(out, what="shuffled", why="test")])
    held = {S: (S in global_mpc._prss_keys) for S in subsets(3, 1)}
    return opened, traces, held, sorted(set(unpickle.TRACE))


def test_shuffle():
    from sqlmpc.mpc.shuffle import compose, subsets
    from sqlmpc.mpc.unpickle import ALLOWED
    n = 500
    res = run_parties(_shuffle_party, args=(n,))
    opened, traces, _, _ = res[0]
    for run in range(2):
        c0, c1, c2 = opened[run]
        assert sorted(c0) == list(range(n))                       # a permutation of the input
        assert c1 == [3 * v - 7 for v in c0]                      # same permutation on every column
        assert c2 == [v % 5 for v in c0]                          # ... also across secure types
        assert c0 != list(range(n))
        # the final permutation is exactly the composition of the per-subset permutations
        perms = []
        for S in subsets(3, 1):
            members = [res[i][1][run][S] for i in S]
            outsider = [res[i][1][run][S] for i in range(3) if i not in S]
            assert all((p == members[0]).all() for p in members)  # members agree on π_S
            assert all(p is None for p in outsider)               # the outsider never computes π_S
            perms.append(members[0])
        assert compose(perms).tolist() == c0
    assert opened[0][0] != opened[1][0]                           # fresh permutation per call
    for pid, (_, _, held, trace) in enumerate(res):
        # π_S derives from the PRSS key of S, held by exactly the members of S
        assert held == {S: pid in S for S in subsets(3, 1)}
        assert set(trace) <= ALLOWED


# -- PRF join tokens ------------------------------------------------------------------

async def _prf_party(mpc, pid, n):
    from sqlmpc.mpc import unpickle
    from sqlmpc.mpc.prf import residue_tokens, token_bits, token_field
    from sqlmpc.mpc.reveal import current_ledger
    unpickle.TRACE = []
    field = token_field()
    rng = random.Random(3)
    distinct = rng.sample(range(1, 1 << 62), n)
    keys = _input(mpc, field, distinct, 0)
    again = _input(mpc, field, distinct[::-1], 1)
    bits = token_bits(2 * n)
    t1, t2 = await residue_tokens([keys, again], bits=bits)      # one PRF key for both
    (t3,) = await residue_tokens([keys], bits=bits)               # fresh key
    return (t1.tolist(), t2.tolist(), t3.tolist(), bits, current_ledger().entries, sorted(set(unpickle.TRACE)))


def test_residue_tokens():
    from sqlmpc.mpc.prf import RESIDUE_BITS, token_bits
    from sqlmpc.mpc.reveal import Opening
    from sqlmpc.mpc.unpickle import ALLOWED
    n = 2000
    res = run_parties(_prf_party, args=(n,))
    t1, t2, t3, bits, ledger, trace = res[0]
    assert all(r[:3] == res[0][:3] for r in res)                 # every party gets the same tokens
    assert len(set(t1)) == n                                      # distinct keys -> distinct tokens
    assert t2 == t1[::-1]                                         # equal keys -> equal tokens
    assert len(set(t1) & set(t3)) == 0                            # fresh PRF key per call
    digits = -(-bits // RESIDUE_BITS)
    assert max(t1) < 1 << (RESIDUE_BITS * digits)
    assert ledger[0] == Opening("join tokens", 2 * n * digits, ledger[0].why)
    assert [e.count for e in ledger] == [2 * n * digits, n * digits]
    assert set(trace) <= ALLOWED
    assert token_bits(2) == 21 and token_bits(2 * 10**5) >= 55


def test_residue_logs_are_the_discrete_logs_of_the_symbols():
    import gmpy2

    from sqlmpc.mpc.prf import RESIDUE_BITS, _root_index, _token_prime, residue_logs
    p = _token_prime()
    rng = random.Random(5)
    values = [0, 1, p - 1] + [rng.randrange(p) for _ in range(3000)]
    roots = _root_index(p)
    expected = [0 if v == 0 else roots[int(gmpy2.powmod(v, (p - 1) >> RESIDUE_BITS, p))] for v in values]
    assert residue_logs(np.array(values, dtype=object), p).tolist() == expected
    assert len(set(expected)) > 2900                 # 16-bit logs, not a constant



async def _przs_party(mpc, pid, n):
    from sqlmpc.mpc import runtime
    from sqlmpc.mpc.prf import token_field
    field = token_field().field
    first, second = runtime.pseudorandom_zero_shares(field, n), runtime.pseudorandom_zero_shares(field, n)
    return await mpc.transfer([first.value.tolist(), second.value.tolist()])


def test_pseudorandom_zero_shares_are_fresh_sharings_of_zero():
    from sqlmpc.mpc import runtime
    from sqlmpc.mpc.prf import _token_prime
    p = _token_prime()
    shares = run_parties(_przs_party, args=(500,))[0]          # every party's shares, as party 0 got them
    lam = [int(c) for c in runtime.recombination_vector(runtime.module("finfields").GF(p), (1, 2, 3), 0)]
    for call in range(2):
        column = [shares[i][call] for i in range(3)]
        assert all(sum(lam[i] * column[i][j] for i in range(3)) % p == 0 for j in range(500))   # zeros
        assert len({v for c in column for v in c}) > 1490          # but random shares, not zeros
        # degree 2: any two shares are independent of the secret, so no 2 points determine a line through 0
        assert sum((2 * column[0][j] - column[1][j]) % p == 0 for j in range(500)) < 3
    assert shares[0][0] != shares[0][1]                           # fresh per call

async def _logs_party(mpc, pid, n, liar):
    from sqlmpc.mpc.prf import _token_prime, residue_logs, shared_residue_logs
    p = _token_prime()
    values = np.array([random.Random(9).randrange(p) for _ in range(n)], dtype=object)   # public, the same at all
    if pid == liar:
        await mpc.transfer(b"\x00" * 3)             # an odd-sized answer
        return None
    return (await shared_residue_logs(mpc, values, p, n)).tolist(), residue_logs(values, p).tolist()


def test_shared_residue_logs_split_the_work_and_check_the_answers():
    res = run_parties(_logs_party, args=(1001, None))
    for shared, alone in res:
        assert shared == alone                       # every party: all the logs, though it computed a third
    with pytest.raises(PartyFailure, match=r"party 1 sent malformed join-token digits \(3 bytes, expected 668\)"):
        run_parties(_logs_party, args=(1001, 1), timeout=30)
