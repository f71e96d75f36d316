"""``sqlmpc pg``: listen for PostgreSQL clients, one thread per connection, one shared federation.

At most ``Limits.connections`` clients are served at once; one more gets SQLSTATE 53300
(too_many_connections) at once, and the refusal is audited.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

from pygwire import messages as m

from sqlmpc import errors
from sqlmpc.party.audit import AuditLog, auth_failure
from sqlmpc.party.embedded import state_dir
from sqlmpc.party.keys import load_tokens
from sqlmpc.pg.router import Router
from sqlmpc.pg.errors import TOO_MANY_CONNECTIONS, fatal
from sqlmpc.pg.session import Auth, Limits, Session

log = logging.getLogger("sqlmpc.pg")


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

    def serve_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                if self._stopped.is_set():
                    return
                raise
            if not self._slots.acquire(blocking=False):
                self.refuse(sock)
                continue
            session = Session(sock, self.router, self.auth, self.limits)
            threading.Thread(target=self._serve, args=(session,), daemon=True).start()

    def _serve(self, session: Session) -> None:
        try:
            session.serve()
        finally:
            self._slots.release()

    def refuse(self, sock: socket.socket) -> None:
        """One connection too many: 53300 before anything is read (libpq shows it), audited."""
        message = f"sorry, too many clients already ({self.limits.connections} connections)"
        try:
            peer = "%s:%s" % sock.getpeername()[:2]
        except (OSError, TypeError):
            peer = None
        try:
            sock.settimeout(1.0)
            sock.sendall(m.ErrorResponse(fields=fatal(TOO_MANY_CONNECTIONS, message)).to_wire())
        except OSError:
            pass
        finally:
            sock.close()
        if self.auth.audit is not None:
            auth_failure(self.auth.audit, reason="too many connections", endpoint="pg", action="connect", peer=peer)

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
