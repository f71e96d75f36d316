"""Parties whose tables live in PostgreSQL and Spark: the local SQL runs there (sqlmpc.local.sources).

A real PostgreSQL 15 server: the one `.ci/run` started (SQLMPC_TEST_PG_* variables), or a
throwaway one this module starts with the same script (`.ci/postgres`).  Spark runs in local
mode: one session in this process, one in the insurer's party process.
"""

from __future__ import annotations

from dataclasses import replace

import json
import os
import re
import subprocess
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlmpc import errors
from sqlmpc.catalog import Column, Connection, Role, Table, load_federation
from sqlmpc.cli.approve import approve_lines
from sqlmpc.check import EXPECTED_SUFFIX, differences, result_csv_like
from sqlmpc.local.sources.engines import PostgresSource, SparkSource
from sqlmpc.local.sources.pushdown import transpile

ROOT = Path(__file__).resolve().parent.parent
QUERIES = sorted((ROOT / "queries").glob("*.sql"))
PG_VARS = ("HOST", "PORT", "USER", "PASSWORD", "DB")

pytestmark = pytest.mark.mpc


# -- servers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    """Connection settings of a real PostgreSQL server (started here if .ci/run did not)."""
    started = None
    if not all(os.environ.get(f"SQLMPC_TEST_PG_{v}") for v in PG_VARS):
        out = subprocess.run(["bash", str(ROOT / ".ci" / "postgres"), "start"], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        started = dict(line.split("=", 1) for line in out.split())
        os.environ.update(started)
    settings = {v.lower(): os.environ[f"SQLMPC_TEST_PG_{v}"] for v in PG_VARS}
    yield settings
    if started is not None:
        subprocess.run(["bash", str(ROOT / ".ci" / "postgres"), "stop", started["SQLMPC_TEST_PG_DIR"]], timeout=120)
        for key in started:
            os.environ.pop(key, None)


def pg_admin(pg):
    import adbc_driver_postgresql.dbapi as adbc

    return adbc.connect(f"host={pg['host']} port={pg['port']} user={pg['user']} password={pg['password']} "
                        f"dbname={pg['db']}")


def pg_execute(pg, *statements: str) -> None:
    with pg_admin(pg) as con, con.cursor() as cur:
        for sql in statements:
            cur.execute(sql)
        con.commit()


def pg_load(pg, name: str, table: pa.Table) -> None:
    with pg_admin(pg) as con, con.cursor() as cur:
        cur.adbc_ingest(name, table, mode="replace")
        con.commit()


def pg_connection(pg, monkeypatch, *, port: str | None = None) -> Connection:
    monkeypatch.setenv("TEST_PG_DSN", f"postgresql://{pg['user']}@{pg['host']}:{port or pg['port']}/{pg['db']}")
    monkeypatch.setenv("TEST_PG_PASSWORD", pg["password"])
    return Connection("postgresql", dsn_env="TEST_PG_DSN", password_env="TEST_PG_PASSWORD")


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("sqlmpc-tests").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


# -- the same numbers in every engine --------------------------------------------------------

KEYS = ["p000001", "p999999", "", "Zürich-7", "O'Brien", "x" * 300, "12345", "ключ"]


def test_key_hash_is_the_same_in_duckdb_postgresql_and_spark(pg, spark, tmp_path, monkeypatch):
    """The 64-bit key hash joins rows across parties: every engine must give the same bits."""
    keys = pa.table({"pid": KEYS, "n": list(range(len(KEYS)))})
    pg_load(pg, "hash_keys", keys)
    pq.write_table(keys, tmp_path / "keys.parquet")
    sql = ("SELECT md5_number_lower(CAST(k.pid AS VARCHAR)) AS key_k, k.n AS n FROM hospital.keys AS k "
           "ORDER BY k.n")
    columns = (Column("pid", "VARCHAR", Role.KEY, key_space="p"), Column("n", "INTEGER", Role.ATTRIBUTE))
    expected = duckdb.execute(sql.replace("hospital.keys", f"read_parquet('{tmp_path / 'keys.parquet'}')")
                              ).fetchall()
    assert len({k for k, _ in expected}) == len(KEYS) and any(k >= 2 ** 63 for k, _ in expected)
    for source, table in [
        (PostgresSource("hospital", pg_connection(pg, monkeypatch)), "hash_keys"),
        (SparkSource("hospital", Connection("spark", master="local[1]")), f"parquet.`{tmp_path / 'keys.parquet'}`"),
    ]:
        tables = {("hospital", "keys"): Table("hospital", "keys", None, source.kind, columns, source_table=table)}
        got = pa.Table.from_batches(list(source.run(sql, {"key_k"}, tables)))
        assert got.schema.field("key_k").type == pa.uint64(), source.kind
        assert list(zip(*[got.column(c).to_pylist() for c in ("key_k", "n")])) == expected, source.kind


@pytest.mark.parametrize("engine", ["postgresql", "spark"])
def test_cell_codes_round_and_sums_mean_the_same(engine):
    """list_position (NULL outside the domain, not Spark's 0), DuckDB's round (halves away from zero), HUGEINT."""
    sql = ("SELECT COALESCE(LIST_POSITION(['a', 'b'], t.x) - 1, -1000000000) AS cell, "
           "CAST(ROUND(t.y * 10) AS INT128) AS v FROM hospital.t AS t")
    out = transpile(sql, engine, {})
    assert "LIST_POSITION" not in out.upper() and "ARRAY_POSITION" not in out.upper()
    assert "CASE" in out.upper() and "DECIMAL(38, 0)" in out.upper()
    if engine == "postgresql":
        assert "FLOOR(ABS(" in out.upper()


def test_a_function_the_engine_lacks_is_refused_naming_it_and_the_engine():
    sql = "SELECT jaro_winkler_similarity(t.x, 'abc') AS v FROM hospital.t AS t"
    for engine, name in (("postgresql", "PostgreSQL"), ("spark", "Spark")):
        with pytest.raises(errors.NotSupportedError, match=rf"jaro_winkler_similarity.*{name}"):
            transpile(sql, engine, {})


# -- catalog validation inside the engine ------------------------------------------------------

PATIENT_COLUMNS = (Column("pid", "VARCHAR", Role.KEY, key_space="p", unique=True, nullable=False),
                   Column("diagnosis", "VARCHAR", Role.DIMENSION, domain=("IBD", "HF"), nullable=False),
                   Column("cost", "DOUBLE", Role.MEASURE, range=(0, 100)))


def bad_tables():
    good = {"pid": ["a", "b", "c", "d"], "diagnosis": ["IBD", "HF", "IBD", "HF"], "cost": [1.0, 2.0, 3.0, 4.0]}
    return {
        "domain": ({**good, "diagnosis": ["IBD", "XX", "XX", "HF"]},
                   r"value 'XX' is outside the declared domain.*2 rows violate.*column diagnosis"),
        "range": ({**good, "cost": [1.0, 2.0, 300.0, 4.0]},
                  r"value '300(\.0)?' is outside the declared range \[0, 100\]; 1 row violates.*column cost"),
        "null": ({**good, "diagnosis": ["IBD", None, "HF", "HF"]},
                 r"NULL value in a column that does not allow NULL; 1 row violates.*column diagnosis"),
        "duplicate": ({**good, "pid": ["a", "b", "a", "a"]},
                      r"duplicate key 'a' in a column declared unique; 2 rows repeat.*column pid"),
        "missing column": ({"pid": good["pid"], "cost": good["cost"]},
                           r"the table has no column 'diagnosis'.*column diagnosis"),
        "type": ({**good, "cost": ["1", "2", "3", "4"]},
                 r"the table stores VARCHAR, which does not fit the catalog's DOUBLE.*column cost"),
    }


@pytest.mark.parametrize("case", list(bad_tables()))
def test_postgresql_table_that_does_not_fit_the_catalog_is_refused_precisely(case, pg, monkeypatch):
    data, message = bad_tables()[case]
    name = "bad_" + case.replace(" ", "_")
    pg_load(pg, name, pa.table(data))
    source = PostgresSource("hospital", pg_connection(pg, monkeypatch))
    with pytest.raises(errors.DataFileError, match=message) as err:
        source.validate(Table("hospital", "patients", None, "postgresql", PATIENT_COLUMNS, source_table=name))
    assert err.value.table == "hospital.patients" and f"table {name}" in err.value.source


def test_postgresql_key_over_max_rows_is_refused(pg, monkeypatch):
    pg_load(pg, "bad_max_rows", pa.table({"pid": ["a", "b", "a", "a", "b"], "diagnosis": ["IBD"] * 5,
                                          "cost": [1.0] * 5}))
    columns = (replace(PATIENT_COLUMNS[0], unique=False, max_rows=2),) + PATIENT_COLUMNS[1:]
    source = PostgresSource("hospital", pg_connection(pg, monkeypatch))
    with pytest.raises(errors.DataFileError, match=r"key 'a' has more rows than the column's max_rows = 2; "
                                                    r"1 row is over the limit.*column pid"):
        source.validate(Table("hospital", "patients", None, "postgresql", columns, source_table="bad_max_rows"))


@pytest.mark.parametrize("case", ["domain", "duplicate"])
def test_spark_table_that_does_not_fit_the_catalog_is_refused_precisely(case, spark, tmp_path):
    data, message = bad_tables()[case]
    pq.write_table(pa.table(data), tmp_path / "t.parquet")
    source = SparkSource("insurer", Connection("spark", master="local[1]"))
    table = Table("insurer", "claims", None, "spark", PATIENT_COLUMNS, source_table=f"parquet.`{tmp_path}/t.parquet`")
    with pytest.raises(errors.DataFileError, match=message):
        source.validate(table)


# -- the saved queries with the hospital in PostgreSQL and the insurer in Spark -------------------------

def federation_in_databases(demo: Path, out: Path, pg: dict, *, dsn_port: str | None = None,
                            hospital_table_prefix: str = "hospital_") -> Path:
    """The demo's federation file with the hospital's tables in PostgreSQL and the insurer's in Spark.

    Where each party keeps its data is its own business: the shared file names the kinds, each
    party's local file (``local_files``) its connection or data directory."""
    text = demo.read_text()

    def move(match: re.Match) -> str:
        party, name = match.group(1), match.group(2)
        if party == "hospital":
            return f'[parties.hospital.tables.{name}]\nsource = "postgresql"\ntable = "{hospital_table_prefix}{name}"'
        if party == "insurer":
            return f'[parties.insurer.tables.{name}]\nsource = "spark"\ntable = "parquet.`{demo.parent}/insurer/{name}.parquet`"'
        return f'[parties.{party}.tables.{name}]\nsource = "{party}/{name}.parquet"'

    text = re.sub(r'\[parties\.(\w+)\.tables\.(\w+)\]\nsource = "[^"]+"', move, text)
    local = local_files(out.parent)
    local["hospital"].write_text(f'[postgresql]\ndsn_env = "SQLMPC_HOSPITAL_DSN"\n'
                                 f'password_file = "{out.parent / "hospital.pgpass"}"\n')
    local["insurer"].write_text('[spark]\nmaster = "local[1]"\n')
    local["bureau"].write_text(f'[data]\ndir = "{demo.parent}"\n')
    out.write_text(text)
    # The demo releases its saved queries exactly: approvals name plans, which cover the file's
    # fingerprint, and that names where each table lives.  Approve them again for this file.
    approved = approve_lines([str(q) for q in QUERIES], load(out))
    out.write_text(re.sub(r"approved_plans = \[.*?\n\]", lambda _: approved, text, flags=re.DOTALL))
    return out


def local_files(directory: Path, **replaced: Path) -> dict[str, Path]:
    """Each party's own local file (next to the federation file), some replaced by others."""
    return {party: replaced.get(party, directory / f"{party}-local.toml") for party in ("hospital", "insurer", "bureau")}


def load(path: Path, **replaced: Path):
    """The federation as the embedded parties load it: the shared file and each party's local file."""
    return load_federation(path, local_policy=local_files(path.parent, **replaced))


@pytest.fixture(scope="module")
def demo_5000(tmp_path_factory):
    """The default 5,000-person demo the checked-in expected files are for (reuses SQLMPC_CACHE)."""
    from sqlmpc.party.embedded import demo_federation_path

    cache = os.environ.get("SQLMPC_CACHE") or (
        "/tmp/sqlmpc-cache" if Path("/tmp/sqlmpc-cache").is_dir() else str(tmp_path_factory.mktemp("cache")))
    old = os.environ.get("SQLMPC_CACHE")
    os.environ["SQLMPC_CACHE"] = cache
    try:
        return demo_federation_path(5000)
    finally:
        if old is None:
            del os.environ["SQLMPC_CACHE"]


@pytest.fixture(scope="module")
def databases(pg, demo_5000, tmp_path_factory):
    """The hospital's demo tables loaded into PostgreSQL; federation files pointing at them."""
    pg_execute(pg, "DROP VIEW IF EXISTS broken_app_usage")
    for name in ("patients", "app_usage", "medication"):
        pg_load(pg, f"hospital_{name}", pq.read_table(demo_5000.parent / "hospital" / f"{name}.parquet"))
    # A table whose scan fails inside PostgreSQL (an SQL error in the source engine).
    pg_execute(pg, "CREATE VIEW broken_app_usage AS SELECT pid, sessions / (sessions - sessions) AS sessions, "
               "active_weeks FROM hospital_app_usage")
    d = tmp_path_factory.mktemp("federation")
    (d / "hospital.pgpass").write_text(pg["password"] + "\n")
    os.environ["SQLMPC_HOSPITAL_DSN"] = f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{pg['db']}"
    return d


@pytest.fixture(scope="module")
def embedded(databases, demo_5000, pg):
    from sqlmpc.party.embedded import EmbeddedFederation

    path = federation_in_databases(demo_5000, databases / "federation.toml", pg)
    with EmbeddedFederation(load(path), timeout=120, state=databases / "state") as fed:
        yield fed


@pytest.mark.parametrize("path", QUERIES, ids=[p.stem for p in QUERIES])
def test_saved_query_with_hospital_in_postgresql_and_insurer_in_spark(path, embedded):
    expected = path.with_name(path.stem + EXPECTED_SUFFIX).read_text()
    result = embedded.query(path.read_text())
    assert differences(result_csv_like(result, expected), expected) == []


# -- a failing source fails the query on every party, names it, shows no password; the next query runs --

# The hospital (PostgreSQL) and the bureau (files): the insurer's Spark has nothing to do.
QUERY = (ROOT / "queries" / "app_engagement_by_age.sql").read_text()
EXPECTED = (ROOT / "queries" / "app_engagement_by_age.expected.csv").read_text()


def failing_query(embedded, federation_path: Path | None, **replaced: Path) -> errors.Error:
    if federation_path is not None:
        embedded.reload(load(federation_path, **replaced))
    started = time.monotonic()
    with pytest.raises(errors.Error) as err:
        embedded.query(QUERY)
    assert time.monotonic() - started < 30       # every party fails at once: no one waits for a timeout
    return err.value


def party_log(databases: Path, party: str = "hospital") -> str:
    """The error of the party's last audit record: the engine's own text stays in the party's log
    (what reaches the analyst and the peers names the party, the source and the error's class)."""
    return json.loads((databases / "state" / party / "audit.jsonl").read_text().splitlines()[-1])["error"]


def assert_names_the_source_without_password(error: errors.Error, pg: dict, databases: Path) -> None:
    assert isinstance(error, errors.SourceError), repr(error)
    assert "party 'hospital'" in str(error) and "source postgresql" in str(error)
    assert pg["password"] not in str(error)
    for log in (databases / "state").rglob("*.jsonl"):
        assert pg["password"] not in log.read_text()


@pytest.mark.parametrize("fault", ["wrong password", "unreachable", "missing table", "sql error"])
def test_failing_postgresql_source_fails_the_query_then_the_next_runs(fault, embedded, databases, pg):
    good = databases / "federation.toml"
    bad = databases / "federation-bad.toml"
    if fault == "wrong password":       # the password file is read at each connection: no reload
        (databases / "hospital.pgpass").write_text("not-the-password\n")
        try:
            error = failing_query(embedded, None)
        finally:
            (databases / "hospital.pgpass").write_text(pg["password"] + "\n")
        assert "password authentication failed" in party_log(databases)
    elif fault == "unreachable":
        import socket

        with socket.socket() as s:      # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        bad_local = databases / "hospital-local-bad.toml"       # the hospital's own setting
        bad_local.write_text(local_files(databases)["hospital"].read_text().replace(
            'dsn_env = "SQLMPC_HOSPITAL_DSN"', f'dsn = "host=127.0.0.1 port={port} user=sqlmpc dbname=postgres"'))
        error = failing_query(embedded, good, hospital=bad_local)
        assert f"port {port} failed" in party_log(databases)
    elif fault == "missing table":
        bad.write_text(good.read_text().replace('"hospital_app_usage"', '"no_such_table"'))
        error = failing_query(embedded, bad)
        assert "no_such_table" in party_log(databases) and "does not exist" in party_log(databases)
    else:
        bad.write_text(good.read_text().replace('"hospital_app_usage"', '"broken_app_usage"'))
        error = failing_query(embedded, bad)
        assert "division by zero" in party_log(databases)
    assert_names_the_source_without_password(error, pg, databases)
    if fault != "wrong password":
        embedded.reload(load(good))
    result = embedded.query(QUERY)
    assert differences(result_csv_like(result, EXPECTED), EXPECTED) == []


def test_spark_missing_table_is_a_source_error_naming_party_and_source(spark, tmp_path):
    source = SparkSource("insurer", Connection("spark", master="local[1]"))
    table = Table("insurer", "claims", None, "spark", PATIENT_COLUMNS,
                  source_table=f"parquet.`{tmp_path}/absent.parquet`")
    with pytest.raises(errors.SourceError, match=r"party 'insurer': source spark local\[1\]: .*absent\.parquet"):
        source.validate(table)


# -- the federation file ---------------------------------------------------------------------------

def federation_text(hospital: str) -> str:
    return f"""
[federation]
name = "sources"
[parties.hospital]
address = "127.0.0.1:7001"
{hospital}
[parties.hospital.tables.patients.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "p" }}
[parties.insurer]
address = "127.0.0.1:7002"
[parties.bureau]
address = "127.0.0.1:7003"
"""


def test_federation_file_names_the_source_kind_and_the_local_file_the_connection(tmp_path):
    path = tmp_path / "federation.toml"
    path.write_text(federation_text('[parties.hospital.tables.patients]\nsource = "postgresql"\n'
                                    'table = "clinic.patients"'))
    local = tmp_path / "hospital-local.toml"
    local.write_text('[postgresql]\ndsn_env = "PG_DSN"\npassword_env = "PG_PW"\n')
    fed = load_federation(path, local_policy=local, party="hospital")
    table = fed.table("hospital", "patients")
    assert (table.kind, table.source, table.source_table) == ("postgresql", None, "clinic.patients")
    assert fed.party("hospital").connection("postgresql") == Connection("postgresql", dsn_env="PG_DSN",
                                                                        password_env="PG_PW")
    # The connection is the owner's business: not part of the fingerprint.
    assert load_federation(path).fingerprint == fed.fingerprint
    for private, message in [
        ('[postgresql]\ndsn = "postgresql://u:secret@db/clinic"\n', "holds a password"),
        ('[postgresql]\ndsn = "host=db password=secret"\n', "holds a password"),
    ]:
        local.write_text(private)
        with pytest.raises(errors.ConfigError, match=message):
            load_federation(path, local_policy=local, party="hospital")
    for hospital, message in [
        ('[parties.hospital.postgresql]\ndsn_env = "PG_DSN"\n', "move it into party 'hospital''s own local file"),
        ('[parties.hospital.tables.patients]\nsource = "postgresql"', "needs 'table'"),
        ('[parties.hospital.tables.patients]\nsource = "mysql"', "must end in .parquet"),
    ]:
        if "tables.patients" not in hospital:
            hospital += '[parties.hospital.tables.patients]\nsource = "postgresql"\ntable = "t"'
        path.write_text(federation_text(hospital))
        with pytest.raises(errors.ConfigError, match=message):
            load_federation(path)


def test_failing_spark_source_fails_the_query_then_the_next_runs(embedded, databases):
    """The insurer's table is gone from Spark: every party fails at once, naming the insurer's source."""
    good = databases / "federation.toml"
    bad = databases / "federation-bad.toml"
    bad.write_text(good.read_text().replace("insurer/claims.parquet", "insurer/gone.parquet"))
    embedded.reload(load(bad))
    started = time.monotonic()
    with pytest.raises(errors.SourceError, match=r"party 'insurer': source spark local\[1\]: the database failed "
                                                 r"\(AnalysisException"):
        embedded.query((ROOT / "queries" / "claim_categories.sql").read_text())
    assert "gone.parquet" in party_log(databases, "insurer")       # the engine's text: in the insurer's log
    # Nobody waited for the 120 s MPC timeout (a cold JVM's first Spark query alone can take tens of seconds).
    assert time.monotonic() - started < 60
    embedded.reload(load(good))
    result = embedded.query(QUERY)
    assert differences(result_csv_like(result, EXPECTED), EXPECTED) == []
