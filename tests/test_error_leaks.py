"""Errors never carry data: attacks that read one person's value from an error message.

Two defences, each tested as the attack it stops:

* A query that binds cannot fail on a row (sqlmpc/plan/totality.py): a CAST, an overflow, a
  remainder or a text conversion that would fail on some value the catalog allows is refused
  before any party works, so no party's engine ever raises on one person's value.
* Whatever an engine raises at a party all the same (injected here as DuckDB's own error, which
  quotes the value) leaves the party as its class, party and stage; the text stays in the
  party's audit log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import duckdb
import psycopg
import pytest
import tomli_w

import sqlmpc
from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.party.client import RemoteConnection
from sqlmpc.party.faults import ENGINE_VALUE, FAIL_AFTER_OPENINGS, FAIL_PARTY, FAIL_WITH
from test_network import Federation
from test_pg import start_pg, stop

pytestmark = pytest.mark.mpc

BAND = "c.cost_eur BETWEEN 1000 AND 1100"
# Each would, without the check, make the insurer's DuckDB fail on (and quote) a claim in the band.
ATTACKS = {
    "cast band to SMALLINT": f"SELECT COUNT(*) FROM insurer.claims c WHERE CAST(CASE WHEN {BAND} "
                             f"THEN c.cost_eur * 100 ELSE 0 END AS SMALLINT) = 0",
    "cast to a narrow DECIMAL": f"SELECT COUNT(*) FROM insurer.claims c WHERE CAST(CASE WHEN {BAND} THEN c.cost_eur "
                                f"ELSE 0 END AS DECIMAL(4, 1)) = 0",
    "integer overflow": f"SELECT COUNT(*) FROM insurer.claims c WHERE CASE WHEN {BAND} THEN c.year * 2000000 "
                        f"ELSE 0 END = 0",
    "remainder by a zero in the band": f"SELECT COUNT(*) FROM insurer.claims c "
                                       f"WHERE c.year % CASE WHEN {BAND} THEN 0 ELSE 1 END = 0",
    "cast inside a FILTER": f"SELECT c.year, COUNT(*) FILTER (WHERE CAST(CASE WHEN {BAND} THEN c.cost_eur * 100000 "
                            f"ELSE 1 END AS INTEGER) > 0) AS n FROM insurer.claims c GROUP BY c.year",
}


@pytest.fixture(scope="module")
def band_values(demo_path) -> list[str]:
    """How the band's claims could be spelled in a message (the values the attack is after)."""
    path = Path(demo_path).parent / "insurer" / "claims.parquet"
    values = [v for (v,) in duckdb.sql(f"SELECT cost_eur FROM read_parquet('{path}') c WHERE {BAND}").fetchall()]
    assert len(values) >= 3
    return [text for v in values for text in (f"{v}", f"{v:.2f}", f"{v * 100:.1f}", f"{v * 1000:.1f}", f"{v * 100000:.1f}")]


def assert_no_value(message: str, values: list[str]) -> None:
    leaked = [v for v in values if v in message]
    assert not leaked, f"{leaked[:3]} in {message!r}"


@pytest.mark.parametrize("sql", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_query_that_could_fail_on_a_row_is_refused_before_any_party_works(demo_path, band_values, sql):
    with sqlmpc.connect(demo_path) as con:
        with pytest.raises(errors.SqlTypeError, match="can fail on a row") as err:
            con.execute(sql)
    assert err.value.line is not None and err.value.hint
    assert_no_value(str(err.value), band_values)


def test_the_same_queries_within_the_declared_ranges_still_run(demo_path, federation, union_db):
    # What fits every declared value passes: a wide cast, a divisor that is never zero.
    sql = ("SELECT COUNT(*) AS n FROM insurer.claims c "
           "WHERE c.year % 2 = 0 AND CAST(c.year AS SMALLINT) > 2020 AND CAST(c.cost_eur * 100 AS BIGINT) > 100000")
    with sqlmpc.connect(demo_path) as con:
        (n,), = con.execute(sql).fetchall()
    (want,), = union_db.execute("SELECT COUNT(*) FROM insurer.claims "
                                "WHERE year % 2 = 0 AND year > 2020 AND cost_eur > 1000").fetchall()
    assert n == want and n > 0


def test_text_without_public_values_is_never_converted(demo_path, tmp_path):
    # The bureau's region declared an attribute (no public domain): its values are secret.
    text = Path(demo_path).read_text()
    fed = tomllib.loads(text)
    region = fed["parties"]["bureau"]["tables"]["persons"]["columns"]["region"]
    region.pop("domain")
    region["role"] = "attribute"
    path = Path(demo_path).parent / "attribute-region.toml"
    path.write_text(tomli_w.dumps(fed))
    persons = Path(demo_path).parent / "bureau" / "persons.parquet"
    regions = [r for (r,) in duckdb.sql(f"SELECT DISTINCT region FROM read_parquet('{persons}')").fetchall()]
    with sqlmpc.connect(path) as con:
        for sql in ("SELECT COUNT(*) FROM bureau.persons b WHERE CAST(b.region AS INTEGER) = 1",
                    "SELECT COUNT(*) FROM bureau.persons b WHERE b.region = 5",
                    "SELECT COUNT(*) FROM bureau.persons b WHERE b.region IN (1, 2)",
                    "SELECT COUNT(*) FROM bureau.persons b WHERE CAST(b.region AS DATE) > DATE '2020-01-01'"):
            with pytest.raises(errors.SqlTypeError, match="text without public values") as err:
                con.execute(sql)
            assert_no_value(str(err.value), regions)
        # Text compared with text cannot fail: it runs.
        (n,), = con.execute(f"SELECT COUNT(*) FROM bureau.persons b WHERE b.region = '{regions[0]}'").fetchall()
        assert n > 0


# -- an engine's error at a party all the same --------------------------------------------

@pytest.fixture
def engine_error(monkeypatch, tmp_path):
    """Every party process started from now on: the insurer's DuckDB fails mid-query, quoting a value."""
    monkeypatch.setenv(FAIL_AFTER_OPENINGS, "1")
    monkeypatch.setenv(FAIL_PARTY, "insurer")
    monkeypatch.setenv(FAIL_WITH, "engine")
    monkeypatch.setenv("SQLMPC_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


QUERY = "SELECT b.region, COUNT(*) AS n FROM bureau.persons b JOIN insurer.claims c ON c.pid = b.pid GROUP BY b.region"


def test_an_engine_error_leaves_the_party_without_its_text_dbapi(demo_path, engine_error):
    with sqlmpc.connect(demo_path) as con:
        with pytest.raises(errors.PartyError) as err:
            con.execute(QUERY)
    message = str(err.value)
    assert ENGINE_VALUE not in message, message
    assert err.value.party == "insurer" and err.value.stage not in (None, "admit"), err.value
    assert "ConversionException" in message and "own log" in message
    # The insurer's operator has the full text in its own audit log.
    record = json.loads((engine_error / "insurer" / "audit.jsonl").read_text().splitlines()[-1])
    assert ENGINE_VALUE in record["error"]


def test_an_engine_error_leaves_the_party_without_its_text_shell(demo_path, engine_error):
    run = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "--federation", str(demo_path), "-c", QUERY],
                         capture_output=True, text=True, timeout=300, env=os.environ)
    assert run.returncode == 1 and "insurer" in run.stderr, run.stderr
    assert ENGINE_VALUE not in run.stderr + run.stdout


def test_an_engine_error_leaves_the_party_without_its_text_pg(demo_path, engine_error):
    proc, port = start_pg("pg", "--federation", str(demo_path), "--insecure-loopback")
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="analyst", dbname="demo", autocommit=True) as con:
            with pytest.raises(psycopg.Error) as err:
                con.execute(QUERY)
        assert ENGINE_VALUE not in str(err.value) and "insurer" in str(err.value)
    finally:
        stop(proc)


def test_an_engine_error_leaves_the_party_without_its_text_networked(demo_path, engine_error, tmp_path):
    fed = Federation(demo_path, tmp_path / "net")
    fed.start()
    try:
        with sqlmpc.connect(fed.url()) as con:
            with pytest.raises(errors.PartyError) as err:
                con.execute(QUERY)
        assert ENGINE_VALUE not in str(err.value) and err.value.party == "insurer", err.value
        # Neither the coordinator nor the bureau heard the value; the insurer's own log has it.
        for party in ("hospital", "bureau"):
            assert all(ENGINE_VALUE not in json.dumps(r) for r in fed.audit(party))
        assert ENGINE_VALUE in fed.audit("insurer")[-1]["error"]
        # The analyst's 'catalog' is the shared one: no comment, no file location of the node's.
        client = RemoteConnection(fed.url())
        try:
            shown = json.loads(client._call("catalog", {})[0])["toml"]
            assert str(Path(demo_path).parent) not in shown and "#" not in shown
            assert client.catalog().fingerprint == load_federation(fed.path).fingerprint
        finally:
            client.close()
    finally:
        fed.stop()


def test_shareable_names_a_foreign_error_by_class_and_stage_only():
    exc = duckdb.ConversionException(f"Conversion Error: value {ENGINE_VALUE} can't be cast")
    exc.stage = "local"
    assert errors.shareable(exc) == "ConversionException in stage 'local' (the party's own log has its message)"
    source = errors.SourceError(f'invalid input syntax for type integer: "{ENGINE_VALUE}"', party="insurer",
                                source="pg", withheld="the database failed (InternalError)")
    assert ENGINE_VALUE in str(source) and ENGINE_VALUE not in errors.shareable(source)
    assert errors.shareable(source).startswith("party 'insurer': source pg: the database failed")
