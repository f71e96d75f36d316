"""`sqlmpc pg` under attack: each test is an attack that would succeed if its rule broke.

The catalog (statements that name no party's table) must answer only one SELECT over its
own relations: no file is read, written or listed, no setting or view is changed, in
--insecure-loopback mode and in TLS+token mode, through the simple and the extended
protocol (Parse/Describe/Bind/Execute).  A client must not make the server buffer more
than the limits, and everything is audited.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import ssl
import struct
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import ExecStatus

from test_pg import connect, start_pg, stop, tls_server  # noqa: F401 - tls_server is a fixture

SECRET = "sqlmpc-canary-" + secrets.token_hex(8)


# -- servers in both modes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopback(demo_path, tmp_path_factory):
    state = tmp_path_factory.mktemp("pg-state")
    proc, port = start_pg("--oracle", "pg", "--federation", str(demo_path), "--insecure-loopback",
                          "--state", str(state))
    yield proc, port, state / "audit.jsonl"
    stop(proc)


class Mode:
    """How to reach one server: its port, how to log in, where it audits."""

    def __init__(self, name: str, port: int, audit: Path, pid: int | None = None, **login):
        self.name, self.port, self.audit, self.pid, self.login = name, port, audit, pid, login

    def connect(self, **kwargs) -> psycopg.Connection:
        return connect(self.port, **{**self.login, **kwargs})

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]


@pytest.fixture(params=["insecure-loopback", "tls+token"])
def mode(request, loopback) -> Mode:
    if request.param == "insecure-loopback":
        proc, port, audit = loopback
        return Mode(request.param, port, audit, proc.pid)
    port, token, ca, audit = request.getfixturevalue("tls_server")
    return Mode(request.param, port, audit, password=token, sslmode="verify-ca", sslrootcert=str(ca))


@pytest.fixture
def canary(tmp_path) -> Path:
    """A readable file whose content no response may ever contain."""
    path = tmp_path / "canary.csv"
    path.write_text(f"secret\n{SECRET}\n")
    return path


@pytest.fixture
def patients(demo_path) -> Path:
    found = sorted(Path(demo_path).parent.rglob("patients.parquet"))
    assert found, "the demo has a hospital/patients.parquet"
    return found[0]


# -- what the catalog must refuse -----------------------------------------------------------------

# {canary}: a file with a secret; {parquet}: a party's raw data; {out}: a path under tmp_path that
# must not exist afterwards; {dir}: tmp_path.
ATTACKS = [
    "SELECT * FROM read_parquet('{parquet}') LIMIT 3",
    "select * from READ_PARQUET('{parquet}')",
    "SELECT * FROM '{parquet}'",
    "SELECT * FROM read_csv('{canary}') LIMIT 2",
    "SELECT * FROM read_csv_auto('{canary}', header = false)",
    "SELECT * FROM '{canary}'",
    "SELECT content FROM read_text('{canary}')",
    "SELECT * FROM sniff_csv('{canary}')",
    "/* pg_catalog.pg_class */ SELECT * FROM read_csv('{canary}') -- FROM pg_catalog.pg_class",
    "SELECT relname FROM pg_class WHERE relname IN (SELECT * FROM read_csv('{canary}'))",
    "SELECT (SELECT content FROM read_text('{canary}')) AS x",
    "WITH x AS (SELECT * FROM read_csv('{canary}')) SELECT * FROM x",
    "SELECT * FROM query('SELECT * FROM read_csv(''{canary}'')')",
    "SELECT * FROM query_table('pg_class')",
    "COPY (SELECT 42 AS x) TO '{out}.csv'",
    "copy (select 42 as x) to '{out}.csv' (format csv)",
    "COPY pg_class TO '{out}.csv'",
    "ATTACH '{out}.duckdb' AS x",
    "attach database '{out}.duckdb' as x (type duckdb)",
    "EXPORT DATABASE '{out}'",
    "SELECT count(*) FROM glob('{dir}/*')",
    "select * from GLOB('/root/*')",
    "SELECT 1; COPY (SELECT 42 AS x) TO '{out}.csv'",
    "SELECT 1 -- ; \n; COPY (SELECT 42 AS x) TO '{out}.csv'",
    "CREATE OR REPLACE VIEW pg_namespace AS SELECT 'evil' AS nspname",
    "CREATE TABLE t AS SELECT 1 AS x",
    "CREATE TEMP VIEW v AS SELECT 1 AS x",
    "CREATE MACRO version() AS 'evil'",
    "DROP VIEW pg_namespace",
    "INSERT INTO pg_class VALUES (1)",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA version",
    "CALL pragma_version()",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_databases()",
    "SELECT * FROM main.duckdb_settings",
    "SELECT system.main.current_setting('secret_directory')",
    "SELECT getvariable('x')",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "DESCRIBE SELECT * FROM read_csv('{canary}')",
    "SUMMARIZE SELECT * FROM read_csv('{canary}')",
    "SELECT * FROM (DESCRIBE pg_class)",
    "FROM read_csv('{canary}')",
    "CHECKPOINT",
    "USE system",
    "DETACH memory",
]


def attack_text(template: str, canary: Path, patients: Path, tmp_path: Path) -> str:
    return template.format(canary=canary, parquet=patients, out=tmp_path / "out", dir=tmp_path)


def assert_nothing_leaked_or_written(tmp_path: Path, canary: Path, *responses: str) -> None:
    for response in responses:
        assert SECRET not in response
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.csv"]
    assert canary.read_text() == f"secret\n{SECRET}\n"


def everything(cur) -> str:
    """All a client got: rows and column names."""
    rows = cur.fetchall() if cur.description else []
    return repr([d.name for d in cur.description or []]) + repr(rows)


@pytest.mark.parametrize("template", ATTACKS)
def test_catalog_refuses_files_commands_and_table_functions(mode, template, canary, patients, tmp_path):
    sql = attack_text(template, canary, patients, tmp_path)
    seen = []
    with mode.connect(autocommit=True) as con:
        # The extended protocol (psycopg's default: Parse/Bind/Describe/Execute of the unnamed statement).
        with pytest.raises(psycopg.Error) as refused:
            seen.append(everything(con.execute(sql)))
        seen.append(str(refused.value))
        assert refused.value.sqlstate == "42501", (sql, refused.value.sqlstate, str(refused.value))
        assert "pg_catalog, information_schema" in refused.value.diag.message_hint
        # A named prepared statement.
        with pytest.raises(psycopg.Error) as prepared:
            seen.append(everything(con.execute(sql, prepare=True)))
        assert prepared.value.sqlstate == "42501", (sql, str(prepared.value))
        # The simple query protocol: one Query message (libpq keeps the last result: the refusal).
        result = con.pgconn.exec_(sql.encode())
        seen.append(repr([result.get_value(r, c) for r in range(result.ntuples) for c in range(result.nfields)]))
        assert result.status == ExecStatus.FATAL_ERROR
        assert result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42501"
        # Parse and Describe the statement: the Describe is refused before anything runs.
        con.pgconn.prepare(b"attack", sql.encode())
        described = con.pgconn.describe_prepared(b"attack")
        assert described.status == ExecStatus.FATAL_ERROR
        assert described.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42501"
        # The connection still answers catalog queries, unchanged.
        assert con.execute("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = 'hospital'").fetchall() \
            == [("hospital",)]
    assert_nothing_leaked_or_written(tmp_path, canary, *seen)


def test_catalog_refuses_file_names_as_parameters(mode, canary, tmp_path):
    with mode.connect(autocommit=True) as con:
        for sql in ("SELECT * FROM read_csv(%s)", "SELECT * FROM read_text(%s)", "COPY (SELECT 1) TO %s"):
            for prepare in (False, True):
                with pytest.raises(psycopg.Error) as refused:
                    con.execute(sql, [str(canary) if "read" in sql else str(tmp_path / "out.csv")],
                                prepare=prepare)
                assert refused.value.sqlstate == "42501" and SECRET not in str(refused.value)
    assert_nothing_leaked_or_written(tmp_path, canary)


def test_describe_of_a_party_statement_never_runs_it_in_the_catalog(mode, canary, tmp_path):
    """The old Describe wrapped the text as SELECT * FROM (<sql>) LIMIT 0 in the catalog's DuckDB."""
    out = tmp_path / "y.csv"
    sql = (f"SELECT 1) ; COPY (SELECT 'x') TO '{out}'; "
           "SELECT * FROM (SELECT p.pid FROM hospital.patients p")
    with mode.connect(autocommit=True) as con:
        con.pgconn.prepare(b"wrapped", sql.encode())
        described = con.pgconn.describe_prepared(b"wrapped")
        assert described.status in (ExecStatus.COMMAND_OK, ExecStatus.FATAL_ERROR)
        assert described.nfields == 0                                  # NoData: not known before Execute
        with pytest.raises(psycopg.Error) as refused:                  # Execute: the federation refuses it
            con.execute(sql, prepare=True)
        assert refused.value.sqlstate.startswith("42")
        # A well-formed party query is described by sqlmpc's binder: names and types, nothing run.
        query = b"SELECT b.region, COUNT(*) AS n FROM bureau.persons b WHERE b.region = $1 GROUP BY b.region"
        con.pgconn.prepare(b"good", query)
        described = con.pgconn.describe_prepared(b"good")
        assert described.status == ExecStatus.COMMAND_OK
        assert [described.fname(i) for i in range(described.nfields)] == [b"region", b"n"]
        assert described.ftype(1) == 20                              # int8
    assert not out.exists()
    assert_nothing_leaked_or_written(tmp_path, canary)


def test_one_client_cannot_change_what_another_is_told(mode):
    with mode.connect(autocommit=True) as other:
        before = other.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()
        with mode.connect(autocommit=True) as attacker:
            for sql in ("CREATE OR REPLACE VIEW pg_namespace AS SELECT 'evil' AS nspname",
                        "CREATE OR REPLACE MACRO version() AS 'evil'",
                        "CREATE SCHEMA evil", "COMMENT ON TABLE hospital.patients IS 'evil'"):
                with pytest.raises(psycopg.Error):
                    attacker.execute(sql)
            for sql in ("SET lock_configuration = false", "SET enable_external_access = true", "RESET ALL"):
                attacker.execute(sql)                     # session commands: answered by sqlmpc, never DuckDB's
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                attacker.execute("SELECT * FROM read_csv('/etc/passwd')")
        assert other.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall() == before
        assert "evil" not in other.execute("SELECT version()").fetchone()[0]
        assert ("evil",) not in before


def test_startup_options_do_not_reach_the_catalog(mode, canary, tmp_path):
    options = "-c enable_external_access=true -c lock_configuration=false -c allowed_paths=['/']"
    with mode.connect(autocommit=True, options=options) as con:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            con.execute(f"SELECT * FROM read_csv('{canary}')")
        assert SECRET not in str(refused.value)
        assert con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'insurer' "
                           "ORDER BY 1").fetchall() == [("claims",), ("pharmacy",)]
    assert_nothing_leaked_or_written(tmp_path, canary)


def test_catalog_queries_clients_send_still_work(mode):
    with mode.connect(autocommit=True) as con:
        assert con.execute("SELECT 1").fetchall() == [(1,)]
        assert "PostgreSQL" in con.execute("SELECT version()").fetchone()[0]
        rows = con.execute("SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                           "ON n.oid = c.relnamespace WHERE n.nspname = %s ORDER BY 1", ["insurer"],
                           prepare=True).fetchall()
        assert rows == [("claims",), ("pharmacy",)]
        assert con.execute("SELECT * FROM pg_catalog.pg_policy").fetchall() == []      # none, as before
        columns = con.execute("WITH c AS (SELECT column_name, ordinal_position FROM information_schema.columns "
                              "WHERE table_schema = 'hospital' AND table_name = 'patients') "
                              "SELECT column_name FROM c ORDER BY ordinal_position").fetchall()
        assert ("pid",) in columns


def test_statements_and_refusals_are_audited(mode, canary, tmp_path):
    with mode.connect(autocommit=True, application_name="audit-probe") as con:
        con.execute("SELECT count(*) FROM information_schema.tables").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute(f"SELECT * FROM read_csv('{canary}')")
        con.execute("SELECT COUNT(*) AS n FROM bureau.persons b WHERE b.region <> %s",
                    ["North-secret-parameter"]).fetchall()
    records = [r for r in mode.records() if r.get("event") == "pg statement" and r.get("client") == "audit-probe"]
    catalog = [r for r in records if r["kind"] == "catalog"]
    assert any(r["decision"] == "allowed" and r["outcome"] == "ok" and "information_schema" in r["sql"]
               for r in catalog)
    refused = [r for r in catalog if r["decision"] == "refused"]
    assert refused and refused[-1]["sqlstate"] == "42501" and "read_csv" in refused[-1]["reason"]
    assert any(r["kind"] == "federation" and r["outcome"] == "ok" for r in records)
    for r in records:
        assert r["endpoint"] == "pg" and r["peer"].startswith("127.0.0.1:") and r["user"] == "analyst"
        assert r["analyst"] == ("analyst" if mode.name == "tls+token" else None)
    text = mode.audit.read_text()
    assert SECRET not in text and "North-secret-parameter" not in text
    if mode.name == "tls+token":
        assert mode.login["password"] not in text


# -- limits ----------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def read_to_end(sock: socket.socket) -> bytes | None:
    """What the server sends until it closes (None: it did not close within the socket's timeout)."""
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        return None
    return reply


def flood(port: int, header: bytes, total: int, chunk: int = 1 << 20) -> tuple[int, float]:
    """Send ``header`` then up to ``total`` bytes; returns (bytes the server let us send, seconds to close)."""
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(5)
        sock.sendall(header)
        data = b"x" * chunk
        try:
            while sent < total:
                sent += sock.send(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        try:
            while sock.recv(65536):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    return sent, time.monotonic() - started


def test_oversized_startup_message_is_cut_off_and_audited(mode):
    """A length header of 300 MB before login: closed after the header, not after 300 MB."""
    before = rss_kib(mode.pid) if mode.pid else None
    sent, seconds = flood(mode.port, struct.pack("!I", 300_000_000) + struct.pack("!I", 196608), 300_000_000)
    assert sent < 64 << 20, f"the server kept reading: {sent} bytes"
    assert seconds < 15
    if before is not None:
        assert rss_kib(mode.pid) - before < 32 << 10, "the server buffered the message"
    last = [r for r in mode.records() if r.get("event") == "authentication failed"][-1]
    assert last["endpoint"] == "pg" and "300000000 bytes exceeds the limit of 10000" in last["reason"]
    with mode.connect() as con:                                       # others are still served
        assert con.execute("SELECT 1").fetchall() == [(1,)]


def test_oversized_message_after_login_is_refused(loopback):
    proc, port, audit = loopback
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = struct.pack("!I", 196608) + b"user\0analyst\0database\0demo\0\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        received = b""
        while not received.endswith(b"Z\0\0\0\x05I"):
            received += sock.recv(4096)
        sock.sendall(b"Q" + struct.pack("!I", 300_000_000) + b"SELECT " + b"1" * 65536)
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except ConnectionResetError:
            pass
    assert reply[:1] in (b"E", b"") and (not reply or b"54000" in reply)
    last = json.loads(audit.read_text().splitlines()[-1])
    assert last["event"] == "pg connection closed" and "exceeds the limit of 1048576" in last["reason"]


def test_a_client_that_does_not_log_in_is_closed(tls_server):
    """Slowloris: a startup message dripped one byte at a time is closed at the login deadline."""
    port, _, _, audit = tls_server
    body = struct.pack("!I", 196608) + b"user\0analyst\0database\0demo\0\0"
    message = struct.pack("!I", len(body) + 4) + body
    started = time.monotonic()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            for byte in message[:-1]:
                sock.sendall(bytes([byte]))
                if select.select([sock], [], [], 0.5)[0]:          # the server spoke: an error, then EOF
                    closed = read_to_end(sock) is not None
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    assert closed and time.monotonic() - started < 14
    last = [r for r in map(json.loads, audit.read_text().splitlines()) if r.get("event") == "authentication failed"]
    assert last[-1]["reason"] == "login timeout" and last[-1]["endpoint"] == "pg"


def test_tls_handshake_that_stalls_is_closed(tls_server):
    port, _, _, _ = tls_server
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(struct.pack("!II", 8, 80877103))                 # SSLRequest, then no handshake
        assert sock.recv(1) == b"S"
        started = time.monotonic()
        assert read_to_end(sock) is not None
        assert time.monotonic() - started < 14


def test_too_many_connections_are_refused_with_53300(loopback):
    proc, port, audit = loopback
    idle = []
    try:
        for _ in range(64):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.5)
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            connect(port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:        # the SQLSTATE itself
            body = struct.pack("!I", 196608) + b"user\0analyst\0database\0demo\0\0"
            sock.sendall(struct.pack("!I", len(body) + 4) + body)
            reply = read_to_end(sock)
        assert reply[:1] == b"E" and b"C53300\0" in reply and b"FATAL" in reply
    finally:
        for sock in idle:
            sock.close()
    last = [r for r in map(json.loads, audit.read_text().splitlines()) if r.get("event") == "authentication failed"]
    assert last[-1]["reason"] == "too many connections"
    deadline = time.monotonic() + 10
    while True:                                  # the slots come back as the idle connections close
        try:
            with connect(port) as con:
                assert con.execute("SELECT 1").fetchall() == [(1,)]
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_statements_before_login_are_refused(loopback):
    proc, port, audit = loopback
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        query = b"COPY (SELECT 1) TO '/tmp/x.csv'\0"
        sock.sendall(b"Q" + struct.pack("!I", len(query) + 4) + query)
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except ConnectionResetError:
            pass
    assert b"FATAL" in reply or reply == b""


def test_ssl_wrapped_oversized_startup_is_cut_off(tls_server):
    port, _, ca, audit = tls_server
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(struct.pack("!II", 8, 80877103))
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw) as sock:
            sock.sendall(struct.pack("!II", 300_000_000, 196608))
            sent = 0
            try:
                while sent < 300_000_000:
                    sock.sendall(b"x" * (1 << 20))
                    sent += 1 << 20
            except (OSError, ssl.SSLError):
                pass
    assert sent < 64 << 20
    last = [r for r in map(json.loads, audit.read_text().splitlines()) if r.get("event") == "authentication failed"]
    assert "exceeds the limit of 10000" in last[-1]["reason"]
