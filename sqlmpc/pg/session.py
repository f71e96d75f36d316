"""One client's conversation: startup, TLS, password, simple and extended query protocol.

The bytes are decoded and encoded by pygwire; this module decides what to answer.
A client that fails authentication, sends a message sqlmpc does not offer (COPY,
function calls, binary results) or breaks the protocol gets a FATAL ErrorResponse
and its connection is closed; other clients are not affected.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass, field

import pyarrow as pa
from pygwire import BackendConnection, PygwireError
from pygwire import messages as m
from pygwire.constants import TransactionStatus

from sqlmpc import errors
from sqlmpc.party.audit import AuditLog, auth_failure
from sqlmpc.party.keys import token_hash
from sqlmpc.pg import types
from sqlmpc.pg.errors import (FEATURE_NOT_SUPPORTED, INVALID_AUTHORIZATION, INVALID_PASSWORD,
                              PROTOCOL_VIOLATION, error_fields, fatal)
from sqlmpc.pg.router import Answer, Options, Router, parse_startup_options, placeholder_count
from sqlmpc.pg.settings import SERVER_PARAMETERS
from sqlmpc.sql.script import statements

log = logging.getLogger("sqlmpc.pg")



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
    def __init__(self, sock: socket.socket, router: Router, auth: Auth):
        self.sock = sock
        self.router = router
        self.auth = auth
        self.conn = BackendConnection()
        self.options = Options()
        self.user = ""
        self.application_name = ""
        self.peer = _peer(sock)
        self.tls_active = False
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        self.skip_to_sync = False

    # -- I/O -----------------------------------------------------------------

    def send(self, *msgs: m.PGMessage) -> None:
        self.sock.sendall(b"".join(self.conn.send(msg) for msg in msgs))

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
                data = self.sock.recv(65536)
                if not data:
                    return
                for msg in self.conn.receive(data):
                    self.handle(msg)
        except CloseConnection as exc:
            log.info("closing connection: %s", exc)
        except PygwireError as exc:
            try:
                self.fail(PROTOCOL_VIOLATION, f"protocol violation: {exc}")
            except CloseConnection:
                pass
        except (OSError, ssl.SSLError) as exc:
            log.info("connection lost: %s", exc)
        finally:
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
        if self.auth.tls is not None and not self.tls_active:
            self.refuse_login(INVALID_AUTHORIZATION, "this server requires TLS: connect with sslmode=require",
                              "no TLS")
        if self.auth.tokens is None:
            self.ready_after_auth()
        else:
            self.send(m.AuthenticationCleartextPassword())

    def on_password(self, msg: m.PasswordMessage) -> None:
        password = msg.password if isinstance(msg.password, str) else msg.password.decode(errors="replace")
        if self.auth.analyst(self.user, password.rstrip("\x00")) is None:
            self.refuse_login(INVALID_PASSWORD, f'password authentication failed for user "{self.user}": '
                                                "the password is the analyst's token (keys/analysts/NAME.token)",
                              "invalid token for the user")
        self.ready_after_auth()

    def ready_after_auth(self) -> None:
        params = [m.ParameterStatus(name=k, value=v) for k, v in SERVER_PARAMETERS.items()]
        self.send(m.AuthenticationOk(), *params,
                  m.BackendKeyData(process_id=os.getpid() & 0x7FFFFFFF, secret_key=secrets.token_bytes(4)),
                  m.ReadyForQuery(status=TransactionStatus.IDLE))

    def run(self, sql: str, parameters: list) -> Answer:
        """Route one statement; a bug becomes an InternalError for this client, not a dead thread."""
        try:
            return self.router.run(sql, parameters, self.options)
        except errors.Error:
            raise
        except Exception as exc:
            log.exception("internal error on %r", sql)
            raise errors.InternalError(f"{type(exc).__name__}: {exc}") from exc

    # -- simple query protocol -----------------------------------------------------

    def on_query(self, msg: m.Query) -> None:
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
        self.statements[msg.statement] = Statement(msg.query, list(msg.param_types))
        self.send(m.ParseComplete())

    def on_bind(self, msg: m.Bind) -> None:
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
                portal.answer = self.run(portal.sql, portal.parameters)
        return portal.answer

    def on_describe(self, msg: m.Describe) -> None:
        if msg.kind == "S":
            statement = self.statements.get(msg.name)
            if statement is None:
                return self.error(errors.ProgrammingError(f'prepared statement "{msg.name}" does not exist'))
            n = max(len(statement.param_types), placeholder_count(statement.sql))
            oids = [(statement.param_types[i] if i < len(statement.param_types) and statement.param_types[i]
                     else types.TEXT) for i in range(n)]
            schema = self.router.describe(statement.sql)
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
