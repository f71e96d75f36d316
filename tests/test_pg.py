"""`sqlmpc pg`: the PostgreSQL wire-protocol front end, driven by the real psql client and psycopg."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

import sqlmpc
from sqlmpc.catalog import load_federation
from sqlmpc.party.keys import init_keys

pytestmark = pytest.mark.mpc

QUERIES = Path(__file__).parent.parent / "queries"
SAVED = ["small_cells_suppressed.sql", "claim_categories.sql"]
PSQL = shutil.which("psql")
# CI has psql (PostgreSQL 15's client, which .ci/postgres needs too): there a missing psql fails the tests.
needs_psql = pytest.mark.skipif(PSQL is None and os.environ.get("CI", "").lower() != "true",
                                reason="the psql client is not installed")


def start_pg(*args: str) -> tuple[subprocess.Popen, int]:
    """``sqlmpc pg ... --port 0`` in its own session; returns the process and the port it listens on."""
    proc = subprocess.Popen([sys.executable, "-m", "sqlmpc.cli.main", *args, "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"listening on [\d.]+:(\d+)", line)
        if found:
            return proc, int(found.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"sqlmpc pg did not start: {proc.stderr.read()}")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def server(demo_path):
    proc, port = start_pg("pg", "--federation", str(demo_path), "--insecure-loopback")
    yield port
    stop(proc)


@pytest.fixture(scope="module")
def dbapi_rows(demo_path):
    """The DB-API's answers to the saved queries: (columns, rows, suppressed) per file."""
    out = {}
    with sqlmpc.connect(demo_path) as con:
        for name in SAVED:
            cur = con.execute((QUERIES / name).read_text())
            out[name] = ([d[0] for d in cur.description], cur.fetchall(), cur.suppressed)
    return out


def psql(port: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    assert PSQL is not None, "the psql client is needed in CI (Debian: postgresql-client-15)"
    return subprocess.run([PSQL, "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "analyst", "-d", "demo", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PGCONNECT_TIMEOUT": "10", **(env or {})})


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-12)
    return a == b


def text_of(value) -> str:
    """A DB-API value as psql prints it unaligned (NULL is empty)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


# -- psql ---------------------------------------------------------------------------------------


@needs_psql
def test_psql_dt_lists_a_partys_tables(server, federation):
    out = psql(server, "-c", r"\dt hospital.*")
    assert out.returncode == 0, out.stderr
    listed = re.findall(r"^\s*hospital\s*\|\s*(\w+)\s*\|\s*table", out.stdout, re.M)
    assert sorted(listed) == sorted(t.name for t in federation.party("hospital").tables)
    assert "insurer" not in out.stdout


@needs_psql
def test_psql_d_describes_a_table(server, federation):
    out = psql(server, "-c", r"\d hospital.patients")
    assert out.returncode == 0, out.stderr
    assert 'Table "hospital.patients"' in out.stdout
    columns = re.findall(r"^ (\w+)\s+\|", out.stdout, re.M)
    assert columns == [c.name for c in federation.table("hospital", "patients").columns]


@needs_psql
def test_psql_lists_schemas_databases_and_column_roles(server, federation):
    schemas = psql(server, "-A", "-t", "-c", r"\dn")
    assert schemas.returncode == 0, schemas.stderr
    assert sorted(line.split("|")[0] for line in schemas.stdout.split()) == sorted(federation.party_names)
    databases = psql(server, "-A", "-t", "-c", r"\l")
    assert databases.returncode == 0 and databases.stdout.split("|")[0] == federation.name
    columns = psql(server, "-c", r"\d+ hospital.patients")
    assert columns.returncode == 0, columns.stderr
    roles = dict(re.findall(r"^ (\w+)\s+\|.*\|\s*(\w+)\s*$", columns.stdout, re.M))
    assert roles == {c.name: c.role.value for c in federation.table("hospital", "patients").columns}


@needs_psql
@pytest.mark.parametrize("name", SAVED)
def test_psql_runs_saved_query_with_dbapi_rows(server, dbapi_rows, name):
    columns, rows, _ = dbapi_rows[name]
    out = psql(server, "-A", "-F", "\t", "-P", "footer=off", "-f", str(QUERIES / name))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.rstrip("\n").split("\n")
    assert lines[0].split("\t") == columns
    assert [line.split("\t") for line in lines[1:]] == [[text_of(v) for v in row] for row in rows]


@needs_psql
def test_psql_policy_refusal_has_sqlstate_and_caret(server):
    out = psql(server, "-v", "VERBOSITY=verbose", "-c", "SELECT p.pid FROM hospital.patients p")
    assert out.returncode == 1
    assert "ERROR:  42501: policy violation [key-only-in-join]" in out.stderr
    # psql draws the caret from the position field: under 'p.pid' (column 8).
    line, caret = [x for x in out.stderr.splitlines() if x.startswith("LINE 1:") or set(x.strip()) == {"^"}][:2]
    assert line.index("p.pid") == caret.index("^")


@needs_psql
def test_psql_suppressed_column_by_startup_option(server, dbapi_rows):
    columns, rows, suppressed = dbapi_rows["small_cells_suppressed.sql"]
    out = psql(server, "-A", "-F", "\t", "-P", "footer=off", "-f", str(QUERIES / "small_cells_suppressed.sql"),
               env={"PGOPTIONS": "-c sqlmpc.suppressed_column=on"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.rstrip("\n").split("\n")
    assert lines[0].split("\t") == columns + ["_suppressed"]
    assert [line.split("\t")[-1] for line in lines[1:]] == ["t" if s else "f" for s in suppressed]
    assert any(suppressed) and not all(suppressed)


# Every saved query, through both clients, against a dry-run server (the wire's fidelity for all of
# queries/: types, NULLs, numbers as text; the secure path is the module server's, above and below).
ALL_SAVED = sorted(p.name for p in QUERIES.glob("*.sql"))


@pytest.fixture(scope="module")
def oracle_server(demo_path):
    proc, port = start_pg("--oracle", "pg", "--federation", str(demo_path), "--insecure-loopback")
    yield port
    stop(proc)


@pytest.fixture(scope="module")
def oracle_rows(demo_path):
    out = {}
    with sqlmpc.connect(demo_path, oracle=True) as con:
        for name in ALL_SAVED:
            cur = con.execute((QUERIES / name).read_text())
            out[name] = ([d[0] for d in cur.description], cur.fetchall())
    return out


@needs_psql
def test_every_saved_query_through_psql_and_psycopg_has_the_dbapi_rows(oracle_server, oracle_rows):
    assert len(ALL_SAVED) >= 8
    for name in ALL_SAVED:
        columns, rows = oracle_rows[name]
        out = psql(oracle_server, "-A", "-F", "\t", "-P", "footer=off", "-f", str(QUERIES / name))
        assert out.returncode == 0, (name, out.stderr)
        lines = out.stdout.rstrip("\n").split("\n")
        assert lines[0].split("\t") == columns, name
        assert [line.split("\t") for line in lines[1:]] == [[text_of(v) for v in row] for row in rows], name
        with connect(oracle_server) as con:
            got = con.execute((QUERIES / name).read_text()).fetchall()
        assert len(got) == len(rows) and all(all(same(a, b) for a, b in zip(g, r)) for g, r in zip(got, rows)), name


# -- psycopg -------------------------------------------------------------------------------------


def connect(port: int, **kwargs) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="analyst", dbname="demo", connect_timeout=10, **kwargs)


@pytest.mark.parametrize("name", SAVED)
def test_psycopg_saved_query_same_rows_as_dbapi(server, dbapi_rows, name):
    columns, rows, _ = dbapi_rows[name]
    with connect(server) as con:
        cur = con.execute((QUERIES / name).read_text())
        assert [d.name for d in cur.description] == columns
        got = cur.fetchall()
    assert len(got) == len(rows)
    for mine, theirs in zip(got, rows):
        assert all(same(a, b) for a, b in zip(mine, theirs)), (mine, theirs)


def test_psycopg_parameters_and_errors(server):
    with connect(server) as con:
        rows = con.execute("SELECT b.region, COUNT(*) AS n FROM bureau.persons b WHERE b.region = %s "
                           "GROUP BY b.region", ["North"]).fetchall()
        assert len(rows) == 1 and rows[0][0] == "North" and rows[0][1] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            con.execute("SELECT p.pid FROM hospital.patients p")
        assert refused.value.diag.statement_position == "8"
        with pytest.raises(psycopg.errors.SyntaxError) as syntax:
            con.execute("SELECT b.region FROM bureau.persons b GROUP BY")
        assert syntax.value.diag.sqlstate == "42601"
        assert syntax.value.diag.statement_position is not None
        # The connection is still usable after errors; catalog queries answer from the catalog.
        tables = con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'insurer' "
                             "ORDER BY 1").fetchall()
        assert tables == [("claims",), ("pharmacy",)]


# What BI tools send first: a preview of a table, or the analyst's query wrapped as a subquery.
PREVIEWS = [
    ("SELECT * FROM hospital.patients LIMIT 100", "SELECT * is not supported",
     ["not even a preview with LIMIT", "DESCRIBE hospital.patients", "COUNT(*) FROM hospital.patients t GROUP BY"]),
    ("SELECT * FROM (SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region) AS virtual_table "
     "LIMIT 100", "SELECT * is not supported",
     ["run the query inside the parentheses by itself"]),
    ("SELECT t.region, COUNT(*) FROM (SELECT b.region FROM bureau.persons b) AS t GROUP BY t.region",
     "a subquery in FROM must be a UNION ALL of SELECTs",
     ["UNION ALL", "write one SELECT over the tables themselves"]),
]


@pytest.mark.parametrize("sql, message, hints", PREVIEWS)
def test_bi_previews_are_refused_with_what_to_write_instead(server, demo_path, sql, message, hints):
    with sqlmpc.connect(demo_path, oracle=True) as con, pytest.raises(sqlmpc.errors.UnsupportedSqlError) as refused:
        con.execute(sql)
    assert message in str(refused.value) and all(h in refused.value.hint for h in hints), refused.value.hint
    with connect(server) as con, pytest.raises(psycopg.errors.FeatureNotSupported) as wire:
        con.execute(sql)
    assert message in wire.value.diag.message_primary and wire.value.diag.message_hint == refused.value.hint


def test_psycopg_session_settings(server):
    with connect(server, autocommit=True) as con:
        assert con.execute("SHOW transaction_isolation").fetchall() == [("read committed",)]
        assert con.execute("SHOW server_version").fetchone()[0].startswith("15")
        with pytest.raises(psycopg.errors.UndefinedObject):
            con.execute("SHOW no_such_setting")
        con.execute("SET sqlmpc.suppressed_column = on")
        cur = con.execute("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region")
        assert [d.name for d in cur.description] == ["region", "n", "_suppressed"]
        assert all(row[2] is False for row in cur.fetchall())


def test_psycopg_prepared_statements(server):
    sql = "SELECT b.region, COUNT(*) AS n FROM bureau.persons b WHERE b.region = %s GROUP BY b.region"
    with connect(server) as plain:
        expected = {r: plain.execute(sql, [r]).fetchall() for r in ("North", "South")}
    with connect(server, prepare_threshold=0) as con:          # Parse/Describe a named statement, then Bind
        for region in ("North", "South", "North"):
            cur = con.execute(sql, [region])
            assert [d.name for d in cur.description] == ["region", "n"]
            assert cur.fetchall() == expected[region]


def test_unsupported_message_closes_only_that_connection(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        body = struct.pack("!I", 196608) + b"user\0analyst\0database\0demo\0\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        received = b""
        while not received.endswith(b"Z\0\0\0\x05I"):
            received += sock.recv(4096)
        call = struct.pack("!IHHHhH", 0, 0, 0, 0, 0, 0)             # FunctionCall: not offered
        sock.sendall(b"F" + struct.pack("!I", len(call) + 4) + call)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply[:1] == b"E" and b"FATAL" in reply and b"0A000" in reply
    with connect(server) as con:                                    # the server keeps serving others
        assert con.execute("SELECT 1").fetchall() == [(1,)]


# -- TLS and passwords ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(demo_path, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys")
    tokens = init_keys(load_federation(demo_path), keys)
    proc, port = start_pg("--oracle", "pg", "--federation", str(demo_path), "--bind", "127.0.0.1",
                          "--state", str(keys / "state"),
                          "--tokens", str(keys / "tokens.json"),
                          "--cert", str(keys / "hospital" / "cert.pem"), "--key", str(keys / "hospital" / "key.pem"))
    yield port, tokens["analyst"], keys / "ca.pem", keys / "state" / "audit.jsonl"
    stop(proc)


def test_tls_and_token_password(tls_server):
    port, token, ca, _ = tls_server
    with connect(port, password=token, sslmode="verify-ca", sslrootcert=str(ca)) as con:
        assert con.pgconn.ssl_in_use
        rows = con.execute("SHOW TABLES").fetchall()
    assert any(r[:2] == ("hospital", "patients") for r in rows)


def test_wrong_password_and_plaintext_are_refused(tls_server):
    port, token, ca, audit = tls_server
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(port, password="not-the-token", sslmode="require", application_name="bi-tool")
    failed = [json.loads(line) for line in audit.read_text().splitlines()]
    assert failed[-1]["event"] == "authentication failed" and failed[-1]["endpoint"] == "pg"
    assert failed[-1]["claimed"] == "analyst" and failed[-1]["client"] == "bi-tool"
    assert failed[-1]["peer"].startswith("127.0.0.1:") and "not-the-token" not in audit.read_text()
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        connect(port, password=token, sslmode="disable")
    plaintext = json.loads(audit.read_text().splitlines()[-1])
    assert plaintext["event"] == "authentication failed" and plaintext["reason"] == "no TLS"
    with connect(port, password=token, sslmode="require") as con:   # still serving
        assert con.execute("SELECT 1").fetchall() == [(1,)]


def test_pg_without_keys_or_loopback_is_refused(demo_path):
    out = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "--oracle", "pg", "--federation",
                          str(demo_path), "--port", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "--insecure-loopback" in out.stderr and "Traceback" not in out.stderr


# -- a networked federation ----------------------------------------------------------------------


def test_pg_in_front_of_a_party_node(demo_path, tmp_path, dbapi_rows):
    from test_network import Federation

    nodes = Federation(demo_path, tmp_path)
    nodes.start()
    try:
        proc, port = start_pg("pg", "--connect", nodes.url(), "--insecure-loopback")
        try:
            name = "small_cells_suppressed.sql"
            columns, rows, _ = dbapi_rows[name]
            with connect(port) as con:
                cur = con.execute((QUERIES / name).read_text())
                assert [d.name for d in cur.description] == columns
                got = cur.fetchall()
            assert len(got) == len(rows) and all(all(same(a, b) for a, b in zip(g, r)) for g, r in zip(got, rows))
        finally:
            stop(proc)
    finally:
        nodes.stop()
