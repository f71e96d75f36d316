"""A party's workers: slices of a secure stage's rows on more cores.

A query's secure part runs in W MPC sessions per party, W the smallest ``workers`` count of
the parties (docs/federation.md): session 0 is the party's own (the engine), and session
w ≥ 1 is a process of its own whose MPyC runtime talks only to the other parties' worker w.
A stage that is independent per row (the join tokens) gives slice w of its rows to session
w; the slices are contiguous, of sizes every party computes from the stage's public row
count, so the partition opens nothing.

Shares cross from the engine to its workers as they are: a Shamir share at the party's point
is a share in every session of the same parties and threshold, so a worker continues the
computation on the very sharing the engine holds.  What a worker opens goes through the
reveal gateway in its process and is entered in the engine's ledger.

Workers are forked from a fork server (started once per party process, with the MPC modules
preloaded) a fresh process per query, and killed if the query fails.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.forkserver
import os
import threading
import time
from dataclasses import dataclass, field

from sqlmpc import errors
from sqlmpc.mpc.meter import bytes_sent, peak_rss_mb
from sqlmpc.mpc.reveal import Ledger, current_ledger, ledger_scope

_context = None


def _fork_server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["sqlmpc.mpc.workers", "sqlmpc.mpc.prf"])
    return _context


def start_fork_server() -> None:
    """Start the fork server now (a party with workers, at its start): not in its first query."""
    _fork_server()
    multiprocessing.forkserver.ensure_running()


@dataclass(frozen=True)
class Workers:
    """This party's worker sessions of one query: ``sessions[w - 1]`` is worker w's address list
    (every party's worker w, in federation order)."""
    pid: int
    sessions: tuple[tuple[tuple[str, int], ...], ...]
    tls: object = None              # sqlmpc.mpc.session.TlsFiles of the party, or None
    timeout: float = 30.0
    listen_host: str | None = None
    costs: list = field(default_factory=list, compare=False)    # per finished job: cpu_s, bytes_sent, peak_rss_mb

    @property
    def count(self) -> int:
        """W: the sessions of the query, the party's own included."""
        return 1 + len(self.sessions)

    async def map(self, fn, jobs: list) -> list:
        """``await fn(mpc, job)`` for jobs[w - 1] in worker w's session, all at once; their results.

        Fewer jobs than workers leave the last workers idle (every party gives the same count).
        ``fn`` must be a module-level coroutine function (it is sent to the worker by name)."""
        if len(jobs) > len(self.sessions):
            raise ValueError(f"{len(jobs)} jobs for {len(self.sessions)} workers")
        context = _fork_server()
        started = []
        try:
            for addresses, job in zip(self.sessions, jobs):
                ours, theirs = context.Pipe()
                process = context.Process(target=_worker, daemon=True, name="sqlmpc-worker",
                                          args=(theirs, self.pid, addresses, self.tls, self.timeout,
                                                self.listen_host, fn, job))
                process.start()
                theirs.close()
                started.append((process, ours))
            replies = await asyncio.gather(*(asyncio.to_thread(_receive, p, c) for p, c in started))
        finally:
            for process, conn in started:
                if process.is_alive():
                    process.kill()            # a failed query's workers (or one that never answered)
                process.join()
                conn.close()
        ledger = current_ledger()
        out = []
        for w, (ok, value, openings, costs) in enumerate(replies, start=1):
            for what, count, why in openings:
                ledger.record(what, count, why)
            self.costs.append(costs)
            if not ok:
                raise errors.PartyError(f"worker {w} failed: {value}")
            out.append(value)
        return out


def _receive(process, conn):
    """A worker's one reply: (ok, result or error message, its openings)."""
    try:
        return conn.recv()
    except EOFError:
        process.join()
        return False, f"its process ended without an answer (exit code {process.exitcode})", [], {}


def _exit_with_party(conn) -> None:
    """The party never writes to its worker: the pipe ends when the party process does (a query
    stopped, a node killed), and then so does the worker, instead of waiting on its peers."""
    try:
        conn.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _worker(conn, pid, addresses, tls, timeout, listen_host, fn, job) -> None:
    """Worker w's process: one MPC session with the other parties' worker w, one job."""
    from sqlmpc.mpc.session import MpcSession, run_in_fresh_loop
    from sqlmpc.party import faults
    from sqlmpc.mpc.session import errors as session_errors

    threading.Thread(target=_exit_with_party, args=(conn,), daemon=True).start()
    ledger = Ledger()

    async def main():
        with ledger_scope(faults.armed_worker(ledger)):
            session = MpcSession(pid, list(addresses), tls=tls, timeout=timeout,
                                 listen_host=listen_host if listen_host is not None else addresses[pid][0])
            async with session as mpc:
                result = await fn(mpc, job)
                sent[0] = bytes_sent(mpc)
                return result

    sent = [0]
    openings = lambda: [(e.what, e.count, e.why) for e in ledger.entries]     # noqa: E731
    costs = lambda: {"cpu_s": time.process_time(), "bytes_sent": sent[0], "peak_rss_mb": peak_rss_mb()}  # noqa: E731
    try:
        result = run_in_fresh_loop(main())
    except BaseException as exc:       # noqa: BLE001 - every failure is the engine's to report
        exc = next(iter(session_errors), exc)     # MPyC stops the loop: the cause is kept there
        conn.send((False, f"{type(exc).__name__}: {exc}", openings(), costs()))
    else:
        conn.send((True, result, openings(), costs()))
    finally:
        conn.close()
