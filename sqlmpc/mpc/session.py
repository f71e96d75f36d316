"""Run one party's MPyC runtime inside an ordinary process (no argv parsing).

    async with MpcSession(pid, [(host, port), ...], timeout=30) as mpc:
        ...  # mpc is an mpyc.runtime.Runtime, installed as the global runtime

MPyC keeps one *global* runtime (see :mod:`sqlmpc.mpc.runtime`).  A session
builds a fresh ``Runtime`` for the given party and address list, installs it, installs the restricted unpickler (``sqlmpc.mpc.unpickle``), connects
to the peers (optionally with TLS from explicit files, not MPyC's fixed
``.config/party_i.*`` paths) and on exit shuts the runtime down with a barrier.

With TLS every connection authenticates its peer as the party at that position:
``TlsFiles.parties`` names the party at each position, and a peer certificate must name that
party (:func:`certificate_party`) — the connecting side checks the listener's
certificate before it sends its pid or any PRSS key, the listening side checks the connecting
party's certificate against the pid it announces before MPyC reads anything from it.  A peer that
fails the check fails the session at once (``SessionError``); it is never retried.

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

from sqlmpc.errors import OperationalError
from sqlmpc.mpc import runtime, unpickle
from sqlmpc.mpc.runtime import make_options

@dataclass(frozen=True)
class TlsFiles:
    """TLS material for the MPyC data plane: this party's certificate and key, the CA, and the
    party names by position (federation order): a peer's certificate must name the party at its
    position.  Without names (``()``) peers are checked against the CA only."""
    cert: str
    key: str
    ca: str
    parties: tuple[str, ...] = ()


def certificate_party(peercert: dict | None) -> str | None:
    """The name a verified peer certificate (``ssl.SSLSocket.getpeercert()``'s dict) stands for:
    its first subjectAltName, else its common name; None without a certificate.

    The same rule as gRPC's peer identity, which the control channel compares with a message's
    ``from`` (``ServerCallContext.peer_identity()``), so that both channels know a peer by one name.
    """
    if not peercert:
        return None
    for _kind, value in peercert.get("subjectAltName", ()):
        return str(value)
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def names_party(identity: str | bytes | None, party: str) -> bool:
    """Whether an authenticated peer identity (:func:`certificate_party`, or a Flight call's
    ``peer_identity()``) is the certificate of ``party`` (names compare without case, as the
    certificate carries the name in lower case)."""
    if isinstance(identity, bytes):
        identity = identity.decode(errors="replace")
    return bool(identity) and identity.lower() == party.lower()


class SessionError(OperationalError, RuntimeError):
    """The MPC session could not be started, failed or timed out (its message holds no data: it
    leaves the party as it is, errors.shareable)."""


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
        self._refused: str | None = None      # why a peer failed authentication (the session then fails)

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
            # Not the host name: the exchanger checks that the listener's certificate names the party
            # at its position (TlsFiles.parties), before it sends anything; the CA is checked here.
            ctx.check_hostname = False
        return ctx

    def _party(self, pid: int) -> str | None:
        """The name of the party at position pid, when the TLS material names the parties."""
        names = self.tls.parties if self.tls is not None else ()
        return names[pid] if 0 <= pid < len(names) else None

    def _refuse(self, rt, why: str) -> None:
        """A peer failed authentication: the session fails at once (not after the timeout)."""
        if self._refused is None:
            self._refused = why
        done = rt.parties[rt.pid].protocol
        if isinstance(done, asyncio.Future) and not done.done():
            done.set_exception(SessionError(why))

    def _exchanger(self, rt):
        """MPyC's MessageExchanger with the peer's certificate checked against the party at its
        position before anything is sent to it (connecting side) or read from it (listening side)."""
        session = self
        base = runtime.message_exchanger()

        class Authenticated(base):
            refused = False

            def connection_made(self, transport):
                self.transport = transport
                if self.peer_pid is not None:           # connecting: the listener is peer_pid
                    why = session._check_certificate(transport, self.peer_pid, "listening at the MPC address of")
                    if why is not None:
                        self.refused = True
                        transport.abort()
                        session._refuse(rt, why)
                        return
                super().connection_made(transport)

            def data_received(self, data):
                if self.refused:
                    return
                if self.peer_pid is None and session.tls is not None:    # listening: check the announced pid
                    head = bytes(self.bytes[:2]) + bytes(data[:2])
                    if len(head) >= 2:
                        pid = int.from_bytes(head[:2], "little")
                        why = session._check_announced(self.transport, pid)
                        if why is not None:
                            self.refused = True
                            self.transport.abort()
                            session._refuse(rt, why)
                            return
                super().data_received(data)

            def connection_lost(self, exc):
                if self.refused or (self.peer_pid is None):
                    return                              # never registered with the runtime
                super().connection_lost(exc)

        return Authenticated

    def _check_certificate(self, transport, pid: int, role: str) -> str | None:
        """Why the peer on ``transport`` is not the party at position pid (None: it is)."""
        name = self._party(pid)
        if name is None:
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        identity = certificate_party(ssl_object.getpeercert() if ssl_object is not None else None)
        if names_party(identity, name):
            return None
        return (f"party {self.pid}: the peer {role} party {pid} ('{name}') presented the certificate of "
                f"'{identity}', not of '{name}'")

    def _check_announced(self, transport, pid: int) -> str | None:
        """Why a connecting peer announcing ``pid`` may not take that position (None: it may)."""
        rt = self.mpc
        if not 0 <= pid < self.pid:
            return (f"party {self.pid}: a peer announced MPC position {pid}; only parties "
                    f"0..{self.pid - 1} connect here")
        if rt is not None and rt.parties[pid].protocol is not None:
            return f"party {self.pid}: a second connection announced MPC position {pid}"
        return self._check_certificate(transport, pid, "that connected as")

    async def _connect(self, rt):
        exchanger = self._exchanger(rt)
        m = len(rt.parties)
        if m == 1:
            rt.start_time = time.time()
            return
        loop = rt._loop
        self._refused = None
        for peer in rt.parties:
            peer.protocol = asyncio.Future(loop=loop) if peer.pid == rt.pid else None
        self._server = None
        if rt.pid:  # listen for all parties < pid
            port = rt.parties[rt.pid].port
            self._server = await loop.create_server(lambda: exchanger(rt),
                                                    host=self.listen_host, port=port,
                                                    ssl=self._ssl_context(True), reuse_address=True)
        for peer in rt.parties[rt.pid + 1:]:  # connect to all parties > pid
            name = self._party(peer.pid)
            while True:
                if self._refused is not None:
                    raise SessionError(self._refused)
                try:
                    await loop.create_connection(
                        lambda peer=peer: exchanger(rt, peer.pid), peer.host, peer.port,
                        ssl=self._ssl_context(False),
                        server_hostname=(None if not self.tls else name.lower() if name else f"MPyC party {peer.pid}"))
                    break
                except ssl.SSLCertVerificationError as exc:      # not the federation's CA: no retry
                    raise SessionError(f"party {self.pid}: the peer at the MPC address of party {peer.pid}"
                                       f"{f' ({name!r})' if name else ''} presented a certificate that failed "
                                       f"verification: {exc.verify_message or exc}") from None
                except (ConnectionError, OSError):
                    await asyncio.sleep(0.02)
            if self._refused is not None:
                raise SessionError(self._refused)
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
