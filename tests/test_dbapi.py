"""PEP 249 conformance of the driver, on the embedded 3-party federation (secure path, no mocks)."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pytest

import sqlmpc
from sqlmpc import dbapi, errors

pytestmark = pytest.mark.mpc

# A query one party answers alone (fast: the MPC only adds up per-cell totals).
REGIONS = "SELECT b.region, COUNT(*) AS persons FROM bureau.persons b GROUP BY b.region ORDER BY b.region"
# A query over two parties: join on pseudonyms, some cells below k.
HF_BY_AGE = """SELECT b.age_band, COUNT(DISTINCT p.pid) AS patients
FROM hospital.patients p JOIN bureau.persons b ON b.pid = p.pid
WHERE p.diagnosis = ? GROUP BY b.age_band ORDER BY b.age_band"""
COUNT_DIAGNOSIS = "SELECT COUNT(*) AS n FROM hospital.patients p WHERE p.diagnosis = ?"


@pytest.fixture(scope="module")
def con(federation):
    with dbapi.connect(federation) as con:
        yield con


@pytest.fixture(scope="module")
def hf(con):
    """One secure join query, run once for the module."""
    return con.cursor().execute(HF_BY_AGE, ["HF"])


@pytest.fixture(scope="module")
def oracle(federation):
    with dbapi.connect(federation, oracle=True) as con:
        yield con


# -- module interface --------------------------------------------------------


def test_module_globals():
    assert sqlmpc.apilevel == dbapi.apilevel == "2.0"
    assert sqlmpc.threadsafety in (0, 1, 2, 3)
    assert sqlmpc.paramstyle == "qmark"
    assert callable(sqlmpc.connect)


def test_exception_hierarchy():
    assert issubclass(dbapi.Warning, Exception) and not issubclass(dbapi.Warning, dbapi.Error)
    assert issubclass(dbapi.Error, Exception)
    assert issubclass(dbapi.InterfaceError, dbapi.Error)
    assert issubclass(dbapi.DatabaseError, dbapi.Error)
    for name in ("DataError", "OperationalError", "IntegrityError", "InternalError", "ProgrammingError",
                 "NotSupportedError"):
        cls = getattr(dbapi, name)
        assert issubclass(cls, dbapi.DatabaseError), name
        assert getattr(sqlmpc, name) is cls
    # sqlmpc's specific errors subclass the PEP classes.
    assert issubclass(errors.PolicyError, dbapi.ProgrammingError)
    assert issubclass(errors.SqlSyntaxError, dbapi.ProgrammingError)
    assert issubclass(errors.PartyError, dbapi.OperationalError)


def test_type_objects_and_constructors():
    assert "int64" == sqlmpc.NUMBER and "double" == sqlmpc.NUMBER and "decimal128(18, 4)" == sqlmpc.NUMBER
    assert "string" == sqlmpc.STRING and "string" != sqlmpc.NUMBER
    assert "date32[day]" == sqlmpc.DATETIME and "timestamp[us]" == sqlmpc.DATETIME
    assert "int64" != sqlmpc.DATETIME and "binary" == sqlmpc.BINARY
    assert sqlmpc.Date(2024, 1, 2) == datetime.date(2024, 1, 2)
    assert sqlmpc.Timestamp(2024, 1, 2, 3, 4, 5).hour == 3
    assert isinstance(sqlmpc.DateFromTicks(0), datetime.date)
    assert isinstance(sqlmpc.TimestampFromTicks(0), datetime.datetime)
    assert isinstance(sqlmpc.TimeFromTicks(0), datetime.time)
    assert sqlmpc.Binary(b"x") == b"x"


# -- connection --------------------------------------------------------------


def test_connect_with_a_federation_file(demo_path):
    with sqlmpc.connect(demo_path, oracle=True) as con:
        assert con.federation.path == demo_path
        assert con.cursor().execute(REGIONS).rowcount == 4
    assert con.closed


def test_commit_is_a_no_op_and_rollback_is_not_supported(con):
    assert con.commit() is None
    with pytest.raises(dbapi.NotSupportedError, match="read-only"):
        con.rollback()


def test_use_after_close_raises_interface_error(federation):
    con = dbapi.connect(federation, oracle=True)
    cur = con.cursor()
    with con:
        pass                                     # the context manager closes
    assert con.closed
    con.close()                                  # closing twice is fine
    for call in (con.cursor, con.commit, con.rollback, lambda: con.execute(REGIONS),
                 lambda: cur.execute(REGIONS)):
        with pytest.raises(dbapi.InterfaceError, match="closed"):
            call()


# -- cursor ------------------------------------------------------------------


def test_fresh_cursor_has_no_result(con):
    cur = con.cursor()
    assert cur.description is None and cur.rowcount == -1 and cur.arraysize == 1
    for fetch in (cur.fetchone, cur.fetchmany, cur.fetchall, cur.fetch_arrow_table):
        with pytest.raises(dbapi.ProgrammingError, match="execute"):
            fetch()


def test_description_rowcount_and_fetch(con, oracle):
    cur = con.cursor()
    assert cur.execute(REGIONS) is cur
    assert cur.description == [("region", "string", None, None, None, None, True),
                               ("persons", "int64", None, None, None, None, True)]
    assert all(len(d) == 7 for d in cur.description)
    assert cur.description[0][1] == sqlmpc.STRING and cur.description[1][1] == sqlmpc.NUMBER
    assert cur.rowcount == 4
    expected = oracle.execute(REGIONS).fetchall()
    assert [r[0] for r in expected] == ["East", "North", "South", "West"]
    assert cur.fetchone() == expected[0]
    assert cur.fetchmany() == expected[1:2]                  # arraysize rows
    cur.arraysize = 5
    assert cur.fetchmany() == expected[2:]                   # no more than are left
    assert cur.fetchone() is None and cur.fetchmany(3) == [] and cur.fetchall() == []
    cur.execute(REGIONS)
    assert cur.fetchmany(2) == expected[:2] and cur.fetchall() == expected[2:]
    assert list(cur.execute(REGIONS)) == expected            # iteration
    assert sum(r[1] for r in expected) == 2000


def test_fetch_arrow_table_and_fetchdf_return_the_rest(con):
    cur = con.cursor().execute(REGIONS)
    cur.fetchone()
    table = cur.fetch_arrow_table()
    assert isinstance(table, pa.Table) and table.column_names == ["region", "persons"]
    assert table.column("region").to_pylist() == ["North", "South", "West"]
    assert cur.fetchall() == []
    df = cur.execute(REGIONS).fetchdf()
    assert list(df.columns) == ["region", "persons", "_suppressed"] and df["persons"].sum() == 2000
    assert df["_suppressed"].dtype == bool and not df["_suppressed"].any()


def test_fetchdf_flags_suppressed_rows(con):
    cur = con.cursor().execute(COUNT_DIAGNOSIS, ["no such diagnosis"])
    df = cur.fetchdf()
    assert df["_suppressed"].tolist() == [True] and df["n"].isna().all()


def test_parameters_are_literals_not_sql(con):
    cur = con.cursor()
    ibd = cur.execute(COUNT_DIAGNOSIS, ["IBD"]).fetchone()[0]
    total = cur.execute("SELECT COUNT(*) AS n FROM hospital.patients p").fetchone()[0]
    assert 10 <= ibd < total
    # Interpolated, this would be `p.diagnosis = 'IBD' OR '1'='1'` and count every patient.
    row = cur.execute(COUNT_DIAGNOSIS, ["IBD' OR '1'='1"]).fetchone()
    assert row == (None,) and cur.suppressed == [True]      # no patient has that diagnosis: 0 < k
    from sqlmpc.sql import parse_query
    from sqlmpc.sql.params import bind_parameters
    bound = bind_parameters(parse_query(COUNT_DIAGNOSIS), ["IBD' OR '1'='1"]).sql("duckdb")
    assert bound.endswith("p.diagnosis = 'IBD'' OR ''1''=''1'")


def test_parameter_count_and_type_errors(con):
    cur = con.cursor()
    with pytest.raises(dbapi.ProgrammingError, match="1 placeholder"):
        cur.execute(COUNT_DIAGNOSIS, [])
    with pytest.raises(dbapi.ProgrammingError, match="sequence"):
        cur.execute(COUNT_DIAGNOSIS, "IBD")
    with pytest.raises(dbapi.ProgrammingError, match="parameter type"):
        cur.execute(COUNT_DIAGNOSIS, [object()])
    with pytest.raises(dbapi.ProgrammingError, match="only allowed in a SELECT"):
        cur.execute("SHOW TABLES", ["x"])


def test_executemany_runs_each_and_keeps_the_last(con):
    cur = con.cursor()
    assert cur.executemany(COUNT_DIAGNOSIS, [["IBD"], ["HF"]]) is cur
    hf = con.cursor().execute(COUNT_DIAGNOSIS, ["HF"]).fetchall()
    assert cur.fetchall() == hf and hf[0][0] >= 10


def test_cursor_close(con):
    cur = con.cursor().execute(REGIONS)
    cur.close()
    with pytest.raises(dbapi.InterfaceError):
        cur.fetchone()
    with pytest.raises(dbapi.InterfaceError):
        cur.execute(REGIONS)
    with con.cursor() as cur2:
        cur2.execute(REGIONS)
    with pytest.raises(dbapi.InterfaceError):
        cur2.fetchall()


def test_statements_through_the_driver(con):
    tables = [r[:2] for r in con.execute("SHOW TABLES").fetchall()]
    assert ("hospital", "patients") in tables and ("bureau", "persons") in tables
    columns = [r[:3] for r in con.execute("DESCRIBE hospital.patients").fetchall()]
    assert ("pid", "VARCHAR", "key") in columns
    plan = [r[0] for r in con.execute("EXPLAIN " + REGIONS).fetchall()]
    assert any("Leakage" in line for line in plan)
    analyzed = [r[0] for r in con.execute("EXPLAIN ANALYZE " + REGIONS).fetchall()]
    assert any("Leakage ledger of this run" in line for line in analyzed)
    assert any(line.startswith("Result: 4 rows, 4 released") for line in analyzed)


# -- the secure join query: suppression and leakage ---------------------------


def test_secure_join_matches_the_oracle_with_suppressed_cells(hf, oracle):
    rows = hf.fetchall()
    expected = oracle.execute(HF_BY_AGE, ["HF"])
    assert rows == expected.fetchall()
    assert hf.suppressed == expected.suppressed
    assert any(hf.suppressed) and not all(hf.suppressed)
    for row, suppressed in zip(rows, hf.suppressed):
        assert (row[1] is None) == suppressed
        if not suppressed:
            assert row[1] >= 10
    assert hf.description[1][1] == sqlmpc.NUMBER


def test_leakage_is_declared(hf):
    assert hf.leakage, "a secure query declares what it opened"
    whats = {item["what"] for item in hf.leakage}
    assert "join tokens" in whats and "cells passing the release rules" in whats


# -- errors --------------------------------------------------------------------


def test_syntax_error_is_a_programming_error_with_a_caret(con):
    with pytest.raises(dbapi.ProgrammingError) as info:
        con.execute("SELECT COUNT(*) FROM hospital.patients p WHERE")
    assert isinstance(info.value, errors.SqlSyntaxError)
    assert "^" in str(info.value)


def test_policy_refusal_is_a_programming_error(con):
    with pytest.raises(dbapi.ProgrammingError) as info:
        con.execute("SELECT p.pid FROM hospital.patients p")
    assert isinstance(info.value, errors.PolicyError)
    assert "key-only-in-join" in str(info.value)


def test_party_failure_is_an_operational_error(demo_path):
    con = sqlmpc.connect(demo_path)
    try:
        con._backend.parties[0].process.kill()
        con._backend.parties[0].process.wait()
        with pytest.raises(dbapi.OperationalError, match="party 'hospital'"):
            con.execute(REGIONS)
    finally:
        con.close()


def test_progress_callback_hears_the_secure_stages(con):
    stages = []
    cur = con.cursor().execute(COUNT_DIAGNOSIS, ["IBD"], progress=stages.append)
    assert cur.fetchone()[0] >= 10
    assert stages and stages[-1] == "reveal" and len(set(stages)) >= 3
