"""Data files against the catalog: one test per violation, and a valid file that registers."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlmpc.catalog import Column, Federation, Party, Role, Table
from sqlmpc.errors import DataFileError, shareable
from sqlmpc.local.data import open_party_database, open_union_database, register_table

COLUMNS = (
    Column("pid", "VARCHAR", Role.KEY, key_space="pseudonym", unique=True, nullable=False),
    Column("diagnosis", "VARCHAR", Role.DIMENSION, domain=("IBD", "HF")),
    Column("year", "INTEGER", Role.DIMENSION, domain=tuple(range(2020, 2026)), nullable=False),
    Column("cost_eur", "DOUBLE", Role.MEASURE, range=(0, 1000), scale=2),
    Column("postcode", "VARCHAR", Role.ATTRIBUTE),
)
GOOD = {"pid": ["a", "b", "c", "d"], "diagnosis": ["IBD", "HF", None, "IBD"], "year": [2020, 2021, 2025, 2022],
        "cost_eur": [0.0, 12.5, 1000.0, None], "postcode": ["1", "2", "3", "4"]}


def parquet_table(tmp_path, data: dict, types: dict | None = None, columns=COLUMNS) -> Table:
    arrays = {k: pa.array(v, type=(types or {}).get(k)) for k, v in data.items()}
    path = tmp_path / "patients.parquet"
    pq.write_table(pa.table(arrays), path)
    return Table("hospital", "patients", path, "parquet", columns)


def csv_table(tmp_path, text: str) -> Table:
    path = tmp_path / "patients.csv"
    path.write_text(text)
    return Table("hospital", "patients", path, "csv", COLUMNS)


def with_value(column: str, row: int, value) -> dict:
    data = {k: list(v) for k, v in GOOD.items()}
    data[column][row - 1] = value
    return data


def refused(table: Table) -> DataFileError:
    with pytest.raises(DataFileError) as info:
        register_table(duckdb.connect(), table)
    err = info.value
    assert err.table == "hospital.patients" and err.path == str(table.source)
    return err


def test_valid_parquet_registers_and_is_queryable(tmp_path):
    data = dict(GOOD, extra=[1, 2, 3, 4])       # extra file columns are ignored
    con = duckdb.connect()
    register_table(con, parquet_table(tmp_path, data))
    assert con.execute("SELECT COUNT(*), SUM(cost_eur) FROM hospital.patients").fetchall() == [(4, 1012.5)]
    described = con.execute("DESCRIBE hospital.patients").fetchall()
    assert [(r[0], r[1]) for r in described] == [("pid", "VARCHAR"), ("diagnosis", "VARCHAR"), ("year", "INTEGER"),
                                                  ("cost_eur", "DOUBLE"), ("postcode", "VARCHAR")]


def test_narrower_integers_are_widened(tmp_path):
    con = duckdb.connect()
    register_table(con, parquet_table(tmp_path, GOOD, {"year": pa.int16()}))
    assert con.execute("SELECT typeof(year) FROM hospital.patients LIMIT 1").fetchall() == [("INTEGER",)]


def test_valid_csv_registers(tmp_path):
    con = duckdb.connect()
    register_table(con, csv_table(tmp_path, "postcode,pid,diagnosis,year,cost_eur\n1,a,IBD,2020,1.5\n2,b,,2021,\n"))
    assert con.execute("SELECT pid, diagnosis, year, cost_eur FROM hospital.patients ORDER BY pid").fetchall() == [
        ("a", "IBD", 2020, 1.5), ("b", None, 2021, None)]


def test_valid_duckdb_file_registers(tmp_path):
    path = tmp_path / "hospital.duckdb"
    with duckdb.connect(str(path)) as db:
        db.execute("CREATE TABLE pat (pid VARCHAR, diagnosis VARCHAR, year BIGINT, cost_eur DOUBLE, postcode VARCHAR)")
        db.execute("INSERT INTO pat VALUES ('a', 'HF', 2024, 3.0, 'x')")
    con = duckdb.connect()
    register_table(con, Table("hospital", "patients", path, "duckdb", COLUMNS, source_table="pat"))
    assert con.execute("SELECT * FROM hospital.patients").fetchall() == [("a", "HF", 2024, 3.0, "x")]


def test_missing_file(tmp_path):
    err = refused(Table("hospital", "patients", tmp_path / "nope.parquet", "parquet", COLUMNS))
    assert "not found" in str(err)


def test_unreadable_file(tmp_path):
    path = tmp_path / "patients.parquet"
    path.write_bytes(b"this is not parquet")
    assert "cannot read" in str(refused(Table("hospital", "patients", path, "parquet", COLUMNS)))


def test_missing_column(tmp_path):
    data = {k: v for k, v in GOOD.items() if k != "postcode"}
    err = refused(parquet_table(tmp_path, data))
    assert err.column == "postcode" and "no column 'postcode'" in str(err)


def test_incompatible_type(tmp_path):
    err = refused(parquet_table(tmp_path, dict(GOOD, cost_eur=["0", "1", "2", "3"])))
    assert err.column == "cost_eur" and "VARCHAR" in str(err) and "DOUBLE" in str(err)


def test_null_key(tmp_path):
    err = refused(parquet_table(tmp_path, with_value("pid", 3, None)))
    assert (err.column, err.row) == ("pid", 3) and "NULL key" in str(err) and "1 row violates" in str(err)


def test_duplicate_key(tmp_path):
    data = with_value("pid", 3, "a")
    data["pid"][3] = "b"
    err = refused(parquet_table(tmp_path, data))
    assert (err.column, err.row) == ("pid", 3) and "duplicate key 'a'" in str(err)
    assert "2 rows repeat" in str(err)


def test_key_over_max_rows(tmp_path):
    """max_rows = 2: a third row of one key is refused at the row where it exceeds the bound."""
    columns = (Column("pid", "VARCHAR", Role.KEY, key_space="pseudonym", nullable=False, max_rows=2),) + COLUMNS[1:]
    data = with_value("pid", 2, "a")
    register_table(duckdb.connect(), parquet_table(tmp_path, data, columns=columns))      # two rows: at the bound
    data["pid"][3] = "a"
    err = refused(parquet_table(tmp_path, data, columns=columns))
    assert (err.column, err.row) == ("pid", 4)
    assert "key 'a' has more rows than the column's max_rows = 2; 1 row is over the limit" in str(err)


def test_duplicate_key_allowed_when_not_unique(tmp_path):
    columns = (Column("pid", "VARCHAR", Role.KEY, key_space="pseudonym", nullable=False),) + COLUMNS[1:]
    register_table(duckdb.connect(), parquet_table(tmp_path, with_value("pid", 3, "a"), columns=columns))


def test_dimension_outside_domain(tmp_path):
    err = refused(parquet_table(tmp_path, with_value("diagnosis", 2, "COPD")))
    assert (err.column, err.row) == ("diagnosis", 2) and "'COPD'" in str(err) and "domain" in str(err)


def test_integer_dimension_outside_domain_counts_rows(tmp_path):
    data = with_value("year", 2, 2019)
    data["year"][3] = 2030
    err = refused(parquet_table(tmp_path, data))
    assert (err.column, err.row) == ("year", 2) and "'2019'" in str(err) and "2 rows violate" in str(err)


@pytest.mark.parametrize("value", [-0.01, 1000.01, float("nan"), float("inf")])
def test_measure_outside_range(tmp_path, value):
    err = refused(parquet_table(tmp_path, with_value("cost_eur", 2, value)))
    assert (err.column, err.row) == ("cost_eur", 2) and "range [0, 1000]" in str(err)


def test_non_nullable_null(tmp_path):
    err = refused(parquet_table(tmp_path, with_value("year", 4, None), {"year": pa.int32()}))
    assert (err.column, err.row) == ("year", 4) and "NULL" in str(err)


def test_csv_value_of_wrong_type(tmp_path):
    err = refused(csv_table(tmp_path, "pid,diagnosis,year,cost_eur,postcode\na,IBD,2020,1,x\nb,HF,20x1,2,y\n"))
    assert (err.column, err.row) == ("year", 2) and "'20x1'" in str(err) and "not a valid INTEGER" in str(err)


def test_csv_outside_domain_reports_row_as_read(tmp_path):
    text = "pid,diagnosis,year,cost_eur,postcode\n" + "".join(f"p{i},IBD,2020,1,x\n" for i in range(50))
    err = refused(csv_table(tmp_path, text + "q,XX,2020,1,x\n"))
    assert (err.column, err.row) == ("diagnosis", 51) and "'XX'" in str(err)


def test_wider_integer_that_does_not_fit(tmp_path):
    err = refused(parquet_table(tmp_path, with_value("year", 1, 5_000_000_000), {"year": pa.int64()}))
    assert (err.column, err.row) == ("year", 1) and "not a valid INTEGER" in str(err)


def test_validate_false_skips_the_checks(tmp_path):
    con = duckdb.connect()
    register_table(con, parquet_table(tmp_path, with_value("diagnosis", 2, "COPD")), validate=False)
    assert con.execute("SELECT COUNT(*) FROM hospital.patients").fetchall() == [(4,)]


def test_party_database_holds_only_its_own_tables(tmp_path):
    table = parquet_table(tmp_path, GOOD)
    other = Table("insurer", "claims", tmp_path / "missing.parquet", "parquet", COLUMNS)
    fed = Federation("f", (Party("hospital", "h:1", (table,)), Party("insurer", "h:2", (other,)),
                           Party("bureau", "h:3")))
    con = open_party_database(fed, "hospital")   # the insurer's (absent) file is never touched
    assert con.execute("SELECT COUNT(*) FROM hospital.patients").fetchall() == [(4,)]
    with pytest.raises(DataFileError):
        open_union_database(fed)


def test_party_databases_draw_no_progress_bar(tmp_path):
    """A party's long local query must not draw DuckDB's progress bar into the analyst's terminal."""
    table = parquet_table(tmp_path, GOOD)
    federation = Federation("f", (Party("hospital", "127.0.0.1:1", (table,)),))
    for con in (open_party_database(federation, "hospital"), open_union_database(federation)):
        assert con.execute("SELECT current_setting('enable_progress_bar')").fetchall() == [(False,)]


def test_what_leaves_the_party_quotes_no_value(tmp_path):
    """A data error names the value for the party's operator; peers and analysts get the rule alone."""
    err = refused(parquet_table(tmp_path, with_value("cost_eur", 2, 1234.5)))
    assert "1234.5" in str(err) and "row 2" in str(err)
    outside = shareable(err)
    assert "1234.5" not in outside and "row 2" not in outside and str(tmp_path) not in outside
    assert outside.startswith("a value is outside the declared range [0, 1000]; 1 row violates this rule")
    assert "table hospital.patients, column cost_eur" in outside
    duplicate = with_value("pid", 3, "a")
    err = refused(parquet_table(tmp_path, duplicate))
    assert "'a'" in str(err) and "'a'" not in shareable(err) and "duplicate keys" in shareable(err)
