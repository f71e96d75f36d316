"""Run one party's MPyC runtime inside an ordinary process (no argv parsing).

    async with MpcSession(pid, [(host, port), ...], timeout=30) as mpc:
        ...  # mpc is an mpyc.runtime.Runtime, installed as the global runtime

MPyC keeps one *global* runtime (see :mod:`sqlmpc.mpc.runtime`).  A session
builds a fresh ``Runtime`` for the given party and address list, installs it, installs the restricted unpickler (``sqlmpc.mpc.unpickle``), connects
to the peers (optionally with TLS from explicit files, not MPyC's fixed
``.config/party_i.*`` paths) and on exit shuts the runtime down with a barrier.

Only one session can be open per process at a time (MPyC's runtime is global);
sessions may be opened and closed repeatedly in one process (session per
query), also from different event loops (``asyncio.run`` per query).

A long-lived session can run several queries one after another with
``await session.run(fn, *args)``: every party must run the same queries in the
same order (MPyC's program counter keeps the parties in step).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field

from sqlmpc.mpc import runtime, unpickle
from sqlmpc.mpc.runtime import make_options

@dataclass(frozen=True)
class TlsFiles:
    """TLS material for the MPyC data plane: this party's certificate and key, and the CA."""
    cert: str
    key: str
    ca: str


class SessionError(RuntimeError):
    """The MPC session could not be started, failed or timed out."""


_active = None  # the one open session in this process

# Exceptions raised inside MPyC coroutines/callbacks during sessions in this process.
# MPyC stops the event loop on such an exception (asyncoro._reconcile), so the awaiting
# code only sees "Event loop stopped before Future completed"; the cause is kept here.
errors: list[BaseException] = []


@dataclass
class SessionStats:
    connect_seconds: float = 0.0
    shutdown_seconds: float = 0.0
    queries: int = 0
    extra: dict = field(default_factory=dict)


class MpcSession:
    """One party's MPyC runtime as an async context manager."""

    def __init__(self, pid: int, addresses: list[tuple[str, int]], *, threshold: int | None = None,
                 tls: TlsFiles | None = None, timeout: float = 30.0, sec_param: int = 30,
                 bit_length: int = 32, log: bool = False, listen_host: str | None = None):
        m = len(addresses)
        if not 0 <= pid < m:
            raise ValueError(f"pid {pid} not in range({m})")
        self.pid = pid
        self.addresses = [(str(h), int(p)) for h, p in addresses]
        self.options = make_options(m, threshold=threshold, sec_param=sec_param,
                                    bit_length=bit_length, log=log)
        self.tls = tls
        self.timeout = timeout
        self.listen_host = listen_host
        self.mpc = None
        self.stats = SessionStats()
        self._broken = False

    # -- lifecycle ----------------------------------------------------------

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, exc_type, exc, tb):
        if exc_type is not None or self._broken:
            self.abort()
            return False
        try:
            await self.stop()
        except Exception:
            self.abort()
            raise
        return False

    async def start(self):
        global _active
        if _active is not None:
            raise SessionError("an MPC session is already open in this process")
        unpickle.install()
        runtime.install_bulk_randomness()
        rt = runtime.new_runtime(self.pid, self.addresses, self.options)
        # Runtime.__init__ caches asyncio.get_event_loop(); make sure it is *this* loop.
        rt._loop = asyncio.get_running_loop()
        mpyc_handler = runtime.exception_handler()

        def handler(loop, context, _pid=self.pid):
            exc = context.get("exception")
            if exc is not None:
                errors.append(exc)
            mpyc_handler(loop, context)
        rt._loop.set_exception_handler(handler)
        runtime.install_runtime(rt)
        self.mpc = rt
        _active = self
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(self._connect(rt), self.timeout)
        except asyncio.TimeoutError:
            self.abort()
            raise SessionError(f"party {self.pid}: could not connect to all {len(self.addresses)} parties "
                               f"within {self.timeout} s") from None
        except BaseException:
            self.abort()
            raise
        self.stats.connect_seconds = time.perf_counter() - t0
        return rt

    async def stop(self):
        """Barrier with all parties, then close the connections."""
        global _active
        rt = self.mpc
        if rt is None:
            return
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(rt.shutdown(), self.timeout)
        except asyncio.TimeoutError:
            self.abort()
            raise SessionError(f"party {self.pid}: shutdown barrier timed out") from None
        self.stats.shutdown_seconds = time.perf_counter() - t0
        self.mpc = None
        _active = None

    def abort(self):
        """Close every connection at once (no barrier). Used on errors."""
        global _active
        rt = self.mpc
        if rt is not None:
            for peer in rt.parties:
                proto = peer.protocol
                if peer.pid != rt.pid and proto is not None and hasattr(proto, "close_connection"):
                    with contextlib.suppress(Exception):
                        proto.close_connection()
            server = getattr(self, "_server", None)
            if server is not None:
                server.close()
        self.mpc = None
        _active = None

    async def run(self, fn, *args, timeout: float | None = None):
        """Run one query ``await fn(mpc, *args)`` in this (long-lived) session.

        On a timeout or error the session is marked broken (the parties' program
        counters can no longer be trusted to agree) and the error is re-raised.
        """
        if self.mpc is None or self._broken:
            raise SessionError("session is not open")
        try:
            if timeout is None:
                result = await fn(self.mpc, *args)
            else:
                result = await asyncio.wait_for(fn(self.mpc, *args), timeout)
        except BaseException:
            self._broken = True
            raise
        self.stats.queries += 1
        return result

    # -- connecting (Runtime.start, with explicit TLS files and listen host) ---

    def _ssl_context(self, server: bool):
        if self.tls is None:
            return None
        purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
        ctx = ssl.create_default_context(purpose)
        ctx.load_cert_chain(self.tls.cert, keyfile=self.tls.key)
        ctx.load_verify_locations(cafile=self.tls.ca)
        if server:
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.check_hostname = False  # peers are pinned by the federation's CA
        return ctx

    async def _connect(self, rt):
        exchanger = runtime.message_exchanger()
        m = len(rt.parties)
        if m == 1:
            rt.start_time = time.time()
            return
        loop = rt._loop
        for peer in rt.parties:
            peer.protocol = asyncio.Future(loop=loop) if peer.pid == rt.pid else None
        self._server = None
        if rt.pid:  # listen for all parties < pid
            port = rt.parties[rt.pid].port
            self._server = await loop.create_server(lambda: exchanger(rt),
                                                    host=self.listen_host, port=port,
                                                    ssl=self._ssl_context(True), reuse_address=True)
        for peer in rt.parties[rt.pid + 1:]:  # connect to all parties > pid
            while True:
                try:
                    await loop.create_connection(
                        lambda peer=peer: exchanger(rt, peer.pid), peer.host, peer.port,
                        ssl=self._ssl_context(False),
                        server_hostname=(f"MPyC party {peer.pid}" if self.tls else None))
                    break
                except (ConnectionError, OSError):
                    await asyncio.sleep(0.02)
        await rt.parties[rt.pid].protocol
        if self._server is not None:
            self._server.close()
            self._server = None
        rt.start_time = time.time()


def session_open() -> bool:
    """Whether this process holds an open MPC session."""
    return _active is not None


def run_in_fresh_loop(coro):
    """Run one query's coroutine in an event loop of its own, closed afterwards.

    Not ``asyncio.run``: after a failure thousands of MPyC tasks are still pending,
    and cancelling them one by one (each reported with its stack by MPyC's exception
    handler) takes minutes.  They are dropped silently with the loop instead.
    """
    errors.clear()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        # MPyC stops the loop on a failure, so the session's own exit may never have run:
        # close what it left open, or the next query finds "a session is already open".
        if _active is not None:
            _active.abort()
        loop.set_exception_handler(lambda loop, context: None)
        asyncio.set_event_loop(None)
        loop.close()
