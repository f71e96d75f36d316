"""Run an SPMD coroutine in m real MPyC parties on loopback (a test helper).

    def f(mpc, pid, n):  # async, defined at module level (it is pickled to 'spawn' children)
        ...
    results = run_parties(f, m=3, args=(1000,))   # one return value per party

Every party runs in its own process (multiprocessing 'spawn'), opens an
MpcSession on free loopback ports inside a ledger scope (``current_ledger()``
works in f), and awaits ``f(mpc, pid, *args)``.  Any failure or the timeout kills
all processes and raises PartyFailure.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import socket
import time
import traceback


class PartyFailure(RuntimeError):
    pass


def _child(fn, pid, addresses, args, q, session_kwargs, open_session=True):
    import asyncio

    from sqlmpc.mpc.reveal import ledger_scope
    from sqlmpc.mpc.session import MpcSession

    async def main():
        with ledger_scope():
            if not open_session:
                return await fn(addresses, pid, *args)
            async with MpcSession(pid, addresses, **session_kwargs) as mpc:
                return await fn(mpc, pid, *args)

    try:
        result = asyncio.run(main())
        q.put((pid, True, result))
    except BaseException:  # noqa: BLE001 - report everything to the parent
        from sqlmpc.mpc import session
        causes = "".join(f"\ncause inside MPyC: {type(e).__name__}: {e}" for e in session.errors)
        q.put((pid, False, traceback.format_exc() + causes))


def free_ports(m: int, host: str = "127.0.0.1") -> list[int]:
    """m currently free TCP ports on host (best effort: they are released before use)."""
    socks, ports = [], []
    try:
        for _ in range(m):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def run_parties(fn, m: int = 3, args=(), *, timeout: float = 120.0, session_kwargs=None,
                open_session: bool = True) -> list:
    """Run ``await fn(mpc, pid, *args)`` in m parties; returns their results in pid order.

    With open_session=False no session is opened: fn(addresses, pid, *args) opens
    its own (e.g. to measure or repeat sessions)."""
    ctx = mp.get_context("spawn")
    ports = free_ports(m)
    addresses = [("127.0.0.1", p) for p in ports]
    q = ctx.Queue()
    kwargs = {"timeout": min(timeout, 60.0)} | dict(session_kwargs or {})
    procs = [ctx.Process(target=_child, args=(fn, i, addresses, tuple(args), q, kwargs, open_session), daemon=True)
             for i in range(m)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < m:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PartyFailure(f"timeout after {timeout} s; parties done: {sorted(results)}")
            try:
                pid, ok, value = q.get(timeout=min(left, 0.5))
            except queue_mod.Empty:
                dead = [i for i, p in enumerate(procs) if i not in results and p.exitcode not in (None, 0)]
                if dead:
                    raise PartyFailure(f"party {dead[0]} died with exit code {procs[dead[0]].exitcode}")
                continue
            if not ok:
                failures = {pid: value}
                end = time.monotonic() + 1.0  # collect the other parties' reports: find the root cause
                while time.monotonic() < end and len(failures) + len(results) < m:
                    try:
                        i, ok_i, v = q.get(timeout=0.2)
                    except queue_mod.Empty:
                        continue
                    if not ok_i:
                        failures[i] = v
                root = sorted(failures, key=lambda i: ("Event loop stopped" in failures[i], i))
                text = "\n".join(f"party {i} failed:\n{failures[i]}" for i in root)
                raise PartyFailure(text)
            results[pid] = value
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
        return [results[i] for i in range(m)]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
        q.close()
