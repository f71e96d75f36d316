"""A party's workers: slices of the per-row secure stages on more cores.

A query's secure part runs in W MPC sessions per party, W the smallest ``workers`` count of
the parties (docs/federation.md): session 0 is the party's own (the engine), and session
w ≥ 1 lives in a worker process of its own whose MPyC runtime talks only to the other
parties' worker w.  A stage that is independent per row (inputs, the shuffle's re-inputs,
the join tokens) gives slice w of its rows to session w; the slices are contiguous, of sizes
every party computes from the stage's public row count, so the partition opens nothing.

Shares cross from the engine to its workers and back as they are: a Shamir share at the
party's point is a share in every session of the same parties and threshold, so a worker
continues the computation on the very sharing the engine holds.  What a worker opens goes
through the reveal gateway in its process and is entered in the engine's ledger.

The workers of a query are forked, when its secure part starts, from a fork server (started
once per party process, with the MPC modules preloaded); they keep their sessions for the
query's stages and end with it.  A worker whose party process ends (a query stopped, a node
killed) ends too.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.forkserver
import os
import threading
import time

import numpy as np

from sqlmpc import errors
from sqlmpc.mpc import runtime
from sqlmpc.mpc.meter import bytes_sent, peak_rss_mb
from sqlmpc.mpc.reveal import Ledger, current_ledger, ledger_scope

_context = None


def _fork_server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["sqlmpc.mpc.workers", "sqlmpc.mpc.prf", "sqlmpc.mpc.shuffle"])
    return _context


def start_fork_server() -> None:
    """Start the fork server now (a party with workers, at its start): not in its first query."""
    _fork_server()
    multiprocessing.forkserver.ensure_running()


# -- a stage's slices ------------------------------------------------------------------

def describe_type(sectype) -> tuple:
    """What a worker needs to rebuild a secure type: its field's modulus and, for an integer
    type, its bit length."""
    bits = sectype.bit_length if sectype.__name__.startswith("SecInt") else None
    return int(sectype.field.modulus), bits


def rebuild_type(mpc, description: tuple):
    modulus, bits = description
    return mpc.SecFld(modulus) if bits is None else mpc.SecInt(bits, p=modulus)


def _along(axis: int, lo: int, hi: int) -> tuple:
    """The index of rows lo..hi along ``axis`` (0: rows of a matrix, 1: its columns)."""
    return (slice(lo, hi),) if axis == 0 else (slice(None), slice(lo, hi))


def _resized(shape: tuple, axis: int, n: int) -> tuple:
    return tuple(n if i == axis else d for i, d in enumerate(shape))


def summed_inputs(mpc, sectype, values, senders, shape: tuple, *, batch: int, axis: int = 0, scale: int = 1):
    """Σ over ``senders`` of their inputs of ``scale`` · values (this party's values, or None at a
    party that sends nothing), a batch along ``axis`` at a time: the copies stay small."""
    field = sectype.field
    chunks = []
    for lo in range(0, shape[axis], batch):
        hi = min(shape[axis], lo + batch)
        if values is not None:
            part = values[_along(axis, lo, hi)]
            # λ·values unreduced: secret sharing reduces its shares anyway (one remainder saved)
            part = field.array(part * scale, check=False) if scale != 1 else field.array(part)
        else:
            part = field.array(np.zeros(_resized(shape, axis, hi - lo), dtype=object), check=False)
        inputs = mpc.input(sectype.array(part), senders=list(senders))
        total = inputs[0]
        for x in inputs[1:]:
            total = total + x
        chunks.append(total)
    if len(chunks) == 1:
        return chunks[0]
    return mpc.np_vstack(chunks) if axis == 0 else mpc.np_hstack(chunks)


async def input_slice(mpc, job) -> np.ndarray:
    """A worker's slice of a :func:`summed_inputs`: its party's shares of the sum."""
    description, values, senders, shape, batch, axis, scale = job
    sectype = rebuild_type(mpc, description)
    total = summed_inputs(mpc, sectype, values, senders, shape, batch=batch, axis=axis, scale=scale)
    return (await mpc.gather(total)).value


async def sliced_inputs(mpc, workers, sectype, values, senders, shape: tuple, *, batch: int, axis: int = 0,
                        scale: int = 1):
    """:func:`summed_inputs` with slice w of the rows (along ``axis``) input in worker w's session."""
    cut = [(None if values is None else values[_along(axis, lo, hi)], _resized(shape, axis, hi - lo))
           for lo, hi in slices(shape[axis], 1 if workers is None else workers.count)]
    (mine, size), theirs = cut[0], cut[1:]
    own = summed_inputs(mpc, sectype, mine, senders, size, batch=batch, axis=axis, scale=scale)
    if not theirs:
        return own
    description = describe_type(sectype)
    shares = await workers.map(input_slice, [(description, v, senders, size, batch, axis, scale)
                                             for v, size in theirs])
    parts = [own] + [sectype.array(sectype.field.array(x, check=False)) for x in shares]
    return mpc.np_vstack(parts) if axis == 0 else mpc.np_hstack(parts)


def slices(n: int, count: int) -> list[tuple[int, int]]:
    """Rows 0..n cut into at most ``count`` contiguous slices of (nearly) equal size: slice w is
    session w's.  Every party computes the same from the public n."""
    step = max(1, -(-n // count))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)] or [(0, 0)]


class Workers:
    """This party's worker sessions of one query: ``sessions[w - 1]`` is worker w's address list
    (every party's worker w, in federation order)."""

    def __init__(self, pid: int, sessions, tls=None, timeout: float = 30.0, listen_host: str | None = None):
        self.pid = pid
        self.sessions = [list(map(tuple, s)) for s in sessions]
        self.tls = tls                  # sqlmpc.mpc.session.TlsFiles of the party, or None
        self.timeout = timeout
        self.listen_host = listen_host
        self.costs: list[dict] = []     # per job done: cpu_s, bytes_sent, peak_rss_mb (drained by the meter)
        self._running: list = []        # (process, jobs pipe, life pipe) per worker, once started

    @property
    def count(self) -> int:
        """W: the sessions of the query, the party's own included."""
        return 1 + len(self.sessions)

    def start(self) -> None:
        """Fork the workers; each connects to its peers at once (every party starts them at the same
        point of the query, so that none waits for another's longer than the session timeout)."""
        if self._running:
            return
        context = _fork_server()
        for addresses in self.sessions:
            ours, theirs = context.Pipe()
            life, life_end = context.Pipe(duplex=False)      # never written: it ends with this process
            process = context.Process(target=_worker, daemon=True, name="sqlmpc-worker",
                                      args=(theirs, life, self.pid, addresses, self.tls, self.timeout,
                                            self.listen_host))
            process.start()
            theirs.close()
            life.close()
            self._running.append((process, ours, life_end))

    async def map(self, fn, jobs: list) -> list:
        """``await fn(mpc, job)`` for jobs[w - 1] in worker w's session, all at once; their results.

        Fewer jobs than workers leave the last workers idle (every party gives the same count).
        ``fn`` must be a module-level coroutine function (it is sent to the worker by name)."""
        if len(jobs) > len(self.sessions):
            raise ValueError(f"{len(jobs)} jobs for {len(self.sessions)} workers")
        self.start()
        # Off the event loop: a job larger than the pipe's buffer waits for its worker to read it, and
        # the worker waits for its peers' workers, whose parties need this party's messages meanwhile.
        replies = await asyncio.gather(*(asyncio.to_thread(_call, p, c, (fn, job))
                                         for (p, c, _), job in zip(self._running, jobs)))
        ledger = current_ledger()
        out = []
        for w, (ok, value, openings, costs) in enumerate(replies, start=1):
            for what, count, why in openings:
                ledger.record(what, count, why)
            self.costs.append(costs)
            if not ok:
                raise _failure(w, *value)
            out.append(value)
        return out

    async def close(self) -> None:
        """The query is done: every worker closes its session (a barrier with its peers) and ends."""
        running, self._running = self._running, []
        try:
            replies = await asyncio.gather(*(asyncio.to_thread(_call, p, c, None) for p, c, _ in running))
            failed = next((w for w, (ok, _, _, _) in enumerate(replies, start=1) if not ok), None)
            if failed is not None:
                raise _failure(failed, *replies[failed - 1][1])
        finally:
            _end(running)

    def kill(self) -> None:
        """After a failure: end every worker at once."""
        running, self._running = self._running, []
        _end(running)


# What a worker's session raises when a peer's worker went away (a failure elsewhere).
_LOST = ("ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError", "IncompleteReadError",
         "InvalidStateError", "EOFError", "PeerGone")


def _failure(w: int, kind: str, message: str, shared: str | None = None) -> BaseException:
    """The error a failed worker stands for, at its party (``shared``: its message as it may leave the
    party, errors.shareable)."""
    if kind == "MemoryError" or kind == "killed":          # killed: by the OOM killer, as a rule
        return MemoryError(f"worker {w}: {message}")          # the party reports it as out of memory
    if kind in _LOST:
        return errors.PeerLostError(f"worker {w} lost its session with the other parties' worker {w} "
                                    f"(a failure elsewhere): {kind}: {message}")
    return errors.PartyError(f"worker {w} failed: {kind}: {message}",
                             withheld=f"worker {w} failed: {kind}: {shared or errors.WITHHELD}")


def _end(running) -> None:
    for process, conn, life in running:
        if process.is_alive():
            process.kill()
        process.join()
        conn.close()
        life.close()


def _call(process, conn, message):
    """Send a worker a message; its reply: (ok, result or (error type, message), openings, costs)."""
    try:
        conn.send(message)
        return conn.recv()
    except (EOFError, OSError):
        process.join()
        kind = "killed" if process.exitcode == -9 else "ended"
        return False, (kind, f"its process ended without an answer (exit code {process.exitcode})"), [], {}


def _exit_with_party(life) -> None:
    """The party never writes to ``life``: it ends when the party process does, and then so
    does the worker, instead of waiting on its peers."""
    try:
        life.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _worker(conn, life, pid, addresses, tls, timeout, listen_host) -> None:
    """Worker w's process: one MPC session with the other parties' worker w, for the jobs the
    engine sends until it sends None."""
    from sqlmpc.mpc.session import MpcSession, run_in_fresh_loop
    from sqlmpc.mpc.session import errors as session_errors
    from sqlmpc.party import faults

    threading.Thread(target=_exit_with_party, args=(life,), daemon=True).start()
    ledger = faults.armed_worker(Ledger())
    state = {"cpu": time.process_time(), "sent": 0, "counts": {}}

    def reply(ok: bool, value, mpc=None) -> None:
        sent = bytes_sent(mpc) if mpc is not None else state["sent"]
        counts = dict(runtime.count_primitives(mpc)) if mpc is not None else state["counts"]
        done = {f"{kind}/{bits}": n - state["counts"].get((kind, bits), 0) for (kind, bits), n in counts.items()}
        costs = {"cpu_s": time.process_time() - state["cpu"], "bytes_sent": sent - state["sent"],
                 "peak_rss_mb": peak_rss_mb(), "primitives": {k: n for k, n in done.items() if n}}
        state.update(cpu=time.process_time(), sent=sent, counts=counts)
        conn.send((ok, value, [(e.what, e.count, e.why) for e in ledger.entries], costs))
        ledger.entries.clear()

    async def main():
        with ledger_scope(ledger):
            session = MpcSession(pid, list(addresses), tls=tls, timeout=timeout,
                                 listen_host=listen_host if listen_host is not None else addresses[pid][0])
            async with session as mpc:
                runtime.count_primitives(mpc)             # the meter's counts, from the first job on
                while (message := await asyncio.to_thread(conn.recv)) is not None:
                    fn, job = message
                    reply(True, await fn(mpc, job), mpc)
            reply(True, None)             # the session closed

    try:
        run_in_fresh_loop(main())
    except BaseException as exc:       # noqa: BLE001 - every failure is the engine's to report
        if isinstance(exc, RuntimeError) and session_errors:
            exc = session_errors[0]        # MPyC stopped the loop ("Event loop stopped ..."): the cause
        kind, message = type(exc).__name__, str(exc)
        if kind not in _LOST and not isinstance(exc, (errors.Error, MemoryError)) and runtime.loaded() \
                and runtime.lost_peers():
            # MPyC's own failure after a peer's worker closed its connection (it unsets the peer's
            # protocol, and the next message to or from it fails): a consequence, not a cause
            kind, message = "PeerGone", f"a peer's worker closed its connection ({kind}: {message})"
        try:
            reply(False, (kind, message, message if kind == "PeerGone" else errors.shareable(exc)))
        except OSError:
            pass
    finally:
        conn.close()
