"""One client's conversation: startup, TLS, password, simple and extended query protocol.

The bytes are decoded and encoded by pygwire; this module decides what to answer.
A client that fails authentication, sends a message sqlmpc does not offer (COPY,
function calls, binary results) or breaks the protocol gets a FATAL ErrorResponse
and its connection is closed; other clients are not affected.

Limits (``Limits``), enforced from each message's length header before its body is
read, so no client makes the server buffer more than a limit: until it has logged in,
a client may send messages of at most 10,000 bytes (PostgreSQL's own startup-packet
limit) and must finish logging in (TLS handshake included) within 10 s; after login a
message may have at most 1 MiB.  A client over a limit gets a FATAL error, its
connection is closed and the audit log says why.

Every statement is audited (``event: "pg statement"``): where it went (catalog,
federation, session command, SHOW), the protocol step, the user and analyst, the
client's address, the decision and outcome with the SQLSTATE, and the statement's
text cut to ``AUDIT_SQL_CHARS``; never a parameter value, a result or a password.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

import pyarrow as pa
from pygwire import BackendConnection, PygwireError
from pygwire import messages as m
from pygwire.constants import MessageDirection, TransactionStatus
from pygwire.framing import StartupFraming, lookup_framing

from sqlmpc import errors
from sqlmpc.party.audit import AuditLog, auth_failure
from sqlmpc.party.keys import token_hash
from sqlmpc.pg import types
from sqlmpc.pg.errors import (FEATURE_NOT_SUPPORTED, INVALID_AUTHORIZATION, INVALID_PASSWORD,
                              PROGRAM_LIMIT_EXCEEDED, PROTOCOL_VIOLATION, TOO_MANY_CONNECTIONS, error_fields,
                              fatal, sqlstate)
from sqlmpc.pg.router import Answer, Options, Router, parse_startup_options, placeholder_count
from sqlmpc.pg.settings import SERVER_PARAMETERS
from sqlmpc.sql.script import statements

log = logging.getLogger("sqlmpc.pg")

AUDIT_SQL_CHARS = 2000          # a statement's text in the audit log is cut to this many characters


@dataclass(frozen=True)
class Limits:
    """What one client may make the server hold or wait for (``sqlmpc pg``'s defaults)."""

    startup_message: int = 10_000        # bytes, any message before login (PostgreSQL: 10,000 for the startup packet)
    message: int = 1 << 20               # bytes, any message after login (a query, a Bind with its parameters)
    login_seconds: float = 10.0          # from accept to a completed login, TLS handshake included
    message_seconds: float = 60.0        # after login: from a message's first byte to its last
    connections: int = 64                # concurrent connections; more are refused with 53300



class CloseConnection(Exception):
    """End this client's connection (after an error was sent, or on Terminate)."""


@dataclass
class Auth:
    """How clients authenticate: tokens = {sha256(token): analyst}; None = no authentication.

    Failed authentications are written to ``audit`` (never the password).
    """

    tokens: dict[str, str] | None = None
    tls: ssl.SSLContext | None = None
    audit: AuditLog | None = None

    def analyst(self, user: str, password: str) -> str | None:
        """The analyst whose token ``password`` is, when that is ``user``; else None."""
        digest = token_hash(password)
        for known, name in (self.tokens or {}).items():
            if hmac.compare_digest(known, digest) and name == user:
                return name
        return None


@dataclass
class Statement:
    sql: str
    param_types: list[int]


@dataclass
class Portal:
    sql: str
    parameters: list
    answer: Answer | None = None
    sent: int = 0
    description_sent: bool = False
    result_formats: list[int] = field(default_factory=list)


class Session:
    def __init__(self, sock: socket.socket, router: Router, auth: Auth, limits: Limits = Limits(),
                 overloaded: bool = False):
        self.sock = sock
        self.overloaded = overloaded             # over the connection limit: refuse at the startup message
        self.router = router
        self.auth = auth
        self.limits = limits
        self.conn = BackendConnection()
        self.options = Options()
        self.user = ""
        self.analyst: str | None = None
        self.application_name = ""
        self.peer = _peer(sock)
        self.tls_active = False
        self.logged_in = False
        self.login_deadline = time.monotonic() + limits.login_seconds
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        self.skip_to_sync = False
        self.catalog = None                  # this client's cursor on the sealed catalog, from login on
        self._buffer = bytearray()

    # -- I/O -----------------------------------------------------------------

    def send(self, *msgs: m.PGMessage) -> None:
        self.sock.sendall(b"".join(self.conn.send(msg) for msg in msgs))

    def audit(self, record: dict) -> None:
        if self.auth.audit is not None:
            self.auth.audit.write({**record, "endpoint": "pg", "user": self.user or None, "analyst": self.analyst,
                                   "peer": self.peer, "client": self.application_name or None})

    def _timeout(self, deadline: float | None) -> None:
        """Give up on the client at ``deadline`` (monotonic), or wait for it as long as it takes (None)."""
        if deadline is None:
            self.sock.settimeout(None)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout
        self.sock.settimeout(left)

    def _receive(self, n: int, deadline: float | None) -> bool:
        """Make the buffer hold ``n`` bytes, reading no more than that; False when the client closed."""
        while len(self._buffer) < n:
            self._timeout(deadline)
            chunk = self.sock.recv(min(65536, n - len(self._buffer)))
            if not chunk:
                return False
            self._buffer += chunk
        return True

    def read_frame(self) -> bytes | None:
        """One whole message as sent (None: the client closed), its length checked before its body is read."""
        startup = isinstance(lookup_framing(self.conn.phase, MessageDirection.FRONTEND), StartupFraming)
        header = 4 if startup else 5
        deadline = None if self.logged_in else self.login_deadline
        if not self._receive(header, deadline):
            return None
        (length,) = struct.unpack_from("!I", self._buffer, header - 4)
        limit = self.limits.message if self.logged_in else self.limits.startup_message
        if length < 4:
            if self.logged_in:
                self.fail(PROTOCOL_VIOLATION, f"invalid message length {length}")
            self.refuse_login(PROTOCOL_VIOLATION, f"invalid message length {length}", "protocol violation")
        if length > limit:
            self.refuse_oversized(length, limit)
        if self.logged_in:
            deadline = time.monotonic() + self.limits.message_seconds
        if not self._receive(header - 4 + length, deadline):
            return None
        frame = bytes(self._buffer)
        self._buffer.clear()
        return frame

    def refuse_oversized(self, length: int, limit: int) -> None:
        what = "message" if self.logged_in else "message before login"
        reason = f"{what} of {length} bytes exceeds the limit of {limit} bytes"
        if self.logged_in:
            self.audit({"event": "pg connection closed", "reason": reason})
            self.fail(PROGRAM_LIMIT_EXCEEDED, reason)
        self.refuse_login(PROTOCOL_VIOLATION, reason, reason)

    def refuse_login(self, code: str, message: str, reason: str) -> None:
        """Audit a failed authentication, then end the connection with a FATAL error."""
        if self.auth.audit is not None:
            auth_failure(self.auth.audit, reason=reason, endpoint="pg", action="startup", peer=self.peer,
                         client=self.application_name or None, claimed=self.user or None)
        self.fail(code, message)

    def fail(self, code: str, message: str) -> None:
        """A FATAL error to the client, then close the connection."""
        try:
            self.sock.sendall(m.ErrorResponse(fields=fatal(code, message)).to_wire())
        except OSError:
            pass
        raise CloseConnection(message)

    def serve(self) -> None:
        try:
            while True:
                frame = self.read_frame()
                if frame is None:
                    return
                for msg in self.conn.receive(frame):
                    self.handle(msg)
        except CloseConnection as exc:
            log.info("closing connection: %s", exc)
        except PygwireError as exc:
            try:
                if self.logged_in:
                    self.fail(PROTOCOL_VIOLATION, f"protocol violation: {exc}")
                self.refuse_login(PROTOCOL_VIOLATION, f"protocol violation: {exc}", "protocol violation")
            except (CloseConnection, OSError, ssl.SSLError):
                pass
        except socket.timeout:
            if self.logged_in:
                self.audit({"event": "pg connection closed",
                            "reason": f"a message took longer than {self.limits.message_seconds:g} s"})
            else:
                try:
                    self.refuse_login(PROTOCOL_VIOLATION, "login not completed within "
                                      f"{self.limits.login_seconds:g} s", "login timeout")
                except (CloseConnection, OSError, ssl.SSLError):
                    pass
        except (OSError, ssl.SSLError) as exc:
            log.info("connection lost: %s", exc)
        finally:
            if self.catalog is not None:
                self.catalog.close()
            try:
                self.sock.close()
            except OSError:
                pass

    # -- dispatch --------------------------------------------------------------

    def handle(self, msg: m.PGMessage) -> None:
        if isinstance(msg, m.Terminate):
            raise CloseConnection("client terminated")
        if self.skip_to_sync and not isinstance(msg, m.Sync):
            return                         # after an error in an extended-query batch
        handler = {
            m.SSLRequest: self.on_ssl, m.GSSEncRequest: self.on_gss, m.StartupMessage: self.on_startup,
            m.PasswordMessage: self.on_password, m.Query: self.on_query, m.Parse: self.on_parse,
            m.Bind: self.on_bind, m.Describe: self.on_describe, m.Execute: self.on_execute,
            m.Sync: self.on_sync, m.Flush: lambda msg: None, m.Close: self.on_close,
            m.CancelRequest: self.on_cancel,
        }.get(type(msg))
        if handler is None:
            self.fail(FEATURE_NOT_SUPPORTED, f"sqlmpc does not support the {type(msg).__name__} message")
        handler(msg)

    # -- startup and authentication ---------------------------------------------

    def on_ssl(self, msg) -> None:
        if self.auth.tls is None or self.tls_active:
            self.send(m.SSLResponse(accepted=False))
            return
        self.send(m.SSLResponse(accepted=True))
        self._timeout(self.login_deadline)            # the handshake counts against the login time
        self.sock = self.auth.tls.wrap_socket(self.sock, server_side=True)
        self.tls_active = True

    def on_gss(self, msg) -> None:
        self.send(m.GSSResponse(accepted=False))

    def on_cancel(self, msg) -> None:
        raise CloseConnection("cancel requests are not supported")

    def on_startup(self, msg: m.StartupMessage) -> None:
        self.user = msg.params.get("user", "")
        self.application_name = msg.params.get("application_name", "")
        parse_startup_options(msg.params.get("options", ""), self.options)
        if self.overloaded:
            self.refuse_login(TOO_MANY_CONNECTIONS, "sorry, too many clients already "
                              f"({self.limits.connections} connections)", "too many connections")
        if self.auth.tls is not None and not self.tls_active:
            self.refuse_login(INVALID_AUTHORIZATION, "this server requires TLS: connect with sslmode=require",
                              "no TLS")
        if self.auth.tokens is None:
            self.ready_after_auth()
        else:
            self.send(m.AuthenticationCleartextPassword())

    def on_password(self, msg: m.PasswordMessage) -> None:
        if self.auth.tokens is None or self.logged_in:
            self.fail(PROTOCOL_VIOLATION, "unexpected password message")
        password = msg.password if isinstance(msg.password, str) else msg.password.decode(errors="replace")
        analyst = self.auth.analyst(self.user, password.rstrip("\x00"))
        if analyst is None:
            self.refuse_login(INVALID_PASSWORD, f'password authentication failed for user "{self.user}": '
                                                "the password is the analyst's token (keys/analysts/NAME.token)",
                              "invalid token for the user")
        self.analyst = analyst
        self.ready_after_auth()

    def ready_after_auth(self) -> None:
        self.logged_in = True
        self.sock.settimeout(None)
        self.catalog = self.router.catalog.cursor()
        params = [m.ParameterStatus(name=k, value=v) for k, v in SERVER_PARAMETERS.items()]
        self.send(m.AuthenticationOk(), *params,
                  m.BackendKeyData(process_id=os.getpid() & 0x7FFFFFFF, secret_key=secrets.token_bytes(4)),
                  m.ReadyForQuery(status=TransactionStatus.IDLE))

    def run(self, sql: str, parameters: list, step: str = "query") -> Answer:
        """Route one statement (audited); a bug becomes an InternalError for this client, not a dead thread."""
        self.require_login()
        return self.audited(sql, step, lambda kind: self.router.run(sql, parameters, self.options, self.catalog,
                                                                    kind))

    def require_login(self) -> None:
        if not self.logged_in:
            self.refuse_login(INVALID_AUTHORIZATION, "log in first: a statement before the startup message",
                              "statement before login")

    def audited(self, sql: str, step: str, work):
        """Run ``work`` and write one audit record for ``sql``: where it went, the decision, the outcome."""
        started = time.monotonic()
        record = {"event": "pg statement", "step": step, "kind": None, "sql": sql[:AUDIT_SQL_CHARS],
                  "decision": "allowed", "outcome": "ok", "sqlstate": None}
        try:
            record["kind"] = self.router.kind(sql)
            return work(record["kind"])
        except errors.Error as exc:
            code = sqlstate(exc)
            record.update(sqlstate=code, outcome="failed")
            if code == "42501":
                record.update(decision="refused", outcome="refused", reason=str(exc).split("\n")[0])
            raise
        except Exception as exc:
            log.exception("internal error on %r", sql)
            record.update(sqlstate="XX000", outcome="failed")
            raise errors.InternalError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            record["duration_s"] = round(time.monotonic() - started, 6)
            self.audit(record)

    # -- simple query protocol -----------------------------------------------------

    def on_query(self, msg: m.Query) -> None:
        self.require_login()
        sqls = statements(msg.query_string)
        if not sqls:
            self.send(m.EmptyQueryResponse())
        for sql in sqls:
            try:
                answer = self.run(sql, [])
            except errors.Error as exc:
                self.send(m.ErrorResponse(fields=error_fields(exc, sql)))
                break
            out = []
            if answer.table is not None:
                out.append(row_description(answer.table.schema))
                out.extend(data_rows(answer.table))
            out.append(m.CommandComplete(tag=answer.tag))
            self.send(*out)
        self.send(m.ReadyForQuery(status=TransactionStatus.IDLE))

    # -- extended query protocol ---------------------------------------------------

    def error(self, exc: Exception, sql: str | None = None) -> None:
        self.send(m.ErrorResponse(fields=error_fields(exc, sql)))
        self.skip_to_sync = True

    def on_parse(self, msg: m.Parse) -> None:
        self.require_login()
        self.statements[msg.statement] = Statement(msg.query, list(msg.param_types))
        self.send(m.ParseComplete())

    def on_bind(self, msg: m.Bind) -> None:
        self.require_login()
        statement = self.statements.get(msg.statement)
        if statement is None:
            return self.error(errors.ProgrammingError(f'prepared statement "{msg.statement}" does not exist'))
        if any(f == 1 for f in msg.result_formats):
            self.fail(FEATURE_NOT_SUPPORTED, "binary result format is not supported: use text format")
        values = []
        for i, value in enumerate(msg.param_values):
            fmt = msg.param_formats[i if len(msg.param_formats) > 1 else 0] if msg.param_formats else 0
            oid = statement.param_types[i] if i < len(statement.param_types) else 0
            values.append(types.from_binary(value, oid) if fmt == 1 else types.from_text(value, oid))
        self.portals[msg.portal] = Portal(statement.sql.rstrip().rstrip(";"), values)
        self.send(m.BindComplete())

    def run_portal(self, portal: Portal) -> Answer:
        if portal.answer is None:
            if not portal.sql.strip():
                portal.answer = Answer("")
            else:
                portal.answer = self.run(portal.sql, portal.parameters, "execute")
        return portal.answer

    def on_describe(self, msg: m.Describe) -> None:
        self.require_login()
        if msg.kind == "S":
            statement = self.statements.get(msg.name)
            if statement is None:
                return self.error(errors.ProgrammingError(f'prepared statement "{msg.name}" does not exist'))
            n = max(len(statement.param_types), placeholder_count(statement.sql))
            oids = [(statement.param_types[i] if i < len(statement.param_types) and statement.param_types[i]
                     else types.TEXT) for i in range(n)]
            try:
                schema = self.audited(statement.sql, "describe",
                                      lambda kind: self.router.describe(statement.sql, self.options,
                                                                        self.catalog, kind))
            except errors.Error as exc:
                return self.error(exc, statement.sql)
            self.send(m.ParameterDescription(type_oids=oids),
                      row_description(schema) if schema is not None else m.NoData())
            return
        portal, answer = self.answer_of(msg.name)
        if answer is None:
            return
        portal.description_sent = True
        self.send(row_description(answer.table.schema) if answer.table is not None else m.NoData())

    def answer_of(self, name: str):
        """A portal and its answer; (portal, None) after reporting why there is no answer."""
        portal = self.portals.get(name)
        if portal is None:
            self.error(errors.ProgrammingError(f'portal "{name}" does not exist'))
            return None, None
        try:
            return portal, self.run_portal(portal)
        except errors.Error as exc:
            self.error(exc, portal.sql)
            return portal, None

    def on_execute(self, msg: m.Execute) -> None:
        portal, answer = self.answer_of(msg.portal)
        if answer is None:
            return
        if not answer.tag:
            self.send(m.EmptyQueryResponse())
            return
        if answer.table is None:
            self.send(m.CommandComplete(tag=answer.tag))
            return
        rows = data_rows(answer.table)
        end = len(rows) if msg.max_rows <= 0 else min(len(rows), portal.sent + msg.max_rows)
        batch, portal.sent = rows[portal.sent:end], end
        self.send(*batch, m.CommandComplete(tag=answer.tag) if end == len(rows) else m.PortalSuspended())

    def on_close(self, msg: m.Close) -> None:
        (self.statements if msg.kind == "S" else self.portals).pop(msg.name, None)
        self.send(m.CloseComplete())

    def on_sync(self, msg) -> None:
        self.skip_to_sync = False
        self.portals.pop("", None)
        self.send(m.ReadyForQuery(status=TransactionStatus.IDLE))


def _peer(sock: socket.socket) -> str | None:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except (OSError, ValueError):
        return None


def row_description(schema: pa.Schema) -> m.RowDescription:
    fields = []
    for f in schema:
        oid = types.type_oid(f.type)
        fields.append(m.FieldDescription(name=f.name, type_oid=oid, type_size=types.type_size(oid), type_modifier=-1))
    return m.RowDescription(fields=fields)


def data_rows(table: pa.Table) -> list[m.DataRow]:
    columns = [c.to_pylist() for c in table.columns]
    return [m.DataRow(columns=[types.to_text(v) for v in row]) for row in zip(*columns)]
