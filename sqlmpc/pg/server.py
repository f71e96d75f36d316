"""``sqlmpc pg``: listen for PostgreSQL clients, one thread per connection, one shared federation.

At most ``Limits.connections`` clients are served at once; one more gets SQLSTATE 53300
(too_many_connections) after its startup message, and the refusal is audited.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import sys
import threading
from dataclasses import replace
from pathlib import Path

from sqlmpc import errors
from sqlmpc.party.audit import AuditLog
from sqlmpc.party.embedded import state_dir
from sqlmpc.party.keys import load_tokens
from sqlmpc.pg.router import Router
from sqlmpc.pg.session import Auth, Limits, Session

log = logging.getLogger("sqlmpc.pg")

REFUSING = 16          # connections over the limit being told so at once; more are closed at once


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from None
    return context


def auth_from_args(args, audit: AuditLog) -> tuple[Auth, str]:
    """Authentication and the interface to bind, from the command line; refuses an open server."""
    if args.insecure_loopback:
        return Auth(audit=audit), "127.0.0.1"
    if not (args.tokens and args.cert and args.key):
        raise errors.InterfaceError(
            "sqlmpc pg needs --tokens tokens.json --cert cert.pem --key key.pem (from 'sqlmpc keys init': "
            "keys/tokens.json, keys/<party>/cert.pem, key.pem), or --insecure-loopback for a local demo")
    if not Path(args.tokens).exists():
        raise errors.ConfigError(f"{args.tokens}: no such tokens file")
    return Auth(tokens=load_tokens(args.tokens), tls=tls_context(args.cert, args.key), audit=audit), args.bind


def audit_log(args, connection) -> AuditLog:
    """``--state DIR/audit.jsonl``; by default the embedded federation's state directory (or ./sqlmpc-state)."""
    if args.state:
        return AuditLog(Path(args.state) / "audit.jsonl")
    if args.connect:
        return AuditLog(Path("sqlmpc-state") / "audit.jsonl")
    return AuditLog(state_dir(connection.federation.path) / "audit.jsonl")


class PgServer:
    def __init__(self, router: Router, auth: Auth, host: str, port: int, limits: Limits = Limits()):
        self.router = router
        self.auth = auth
        self.limits = limits
        self.listener = socket.create_server((host, port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        self._stopped = threading.Event()
        self._slots = threading.BoundedSemaphore(limits.connections)
        self._refusals = threading.BoundedSemaphore(REFUSING)
        self.refusal_limits = replace(limits, login_seconds=min(limits.login_seconds, 3.0))

    def serve_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                if self._stopped.is_set():
                    return
                raise
            if self._slots.acquire(blocking=False):
                session, slots = Session(sock, self.router, self.auth, self.limits), self._slots
            elif self._refusals.acquire(blocking=False):
                # One too many: its startup message (and TLS) is read, then 53300, as PostgreSQL does
                # (libpq shows no error sent before that); a few such at a time, the rest just closed.
                session = Session(sock, self.router, self.auth, self.refusal_limits, overloaded=True)
                slots = self._refusals
            else:
                log.warning("too many connections: closing one without a word")
                sock.close()
                continue
            threading.Thread(target=self._serve, args=(session, slots), daemon=True).start()

    @staticmethod
    def _serve(session: Session, slots: threading.BoundedSemaphore) -> None:
        try:
            session.serve()
        finally:
            slots.release()

    def close(self) -> None:
        self._stopped.set()
        self.listener.close()


def _exit(signum, frame):
    raise SystemExit(0)


def serve(args, connection) -> int:
    """Serve ``connection`` (a DB-API connection) to PostgreSQL clients until interrupted."""
    auth, host = auth_from_args(args, audit_log(args, connection))
    server = PgServer(Router(connection), auth, host, args.port)
    mode = ("no TLS, no password (--insecure-loopback)" if auth.tokens is None
            else "TLS required, password = analyst token")
    print(f"sqlmpc pg: listening on {host}:{server.port} ({mode}); "
          f"psql -h {host} -p {server.port} -U analyst -d {connection.federation.name}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _exit)     # stop like Ctrl-C: the federation's parties are shut down
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0
