"""Declared rows per key (``unique``, ``max_rows``): they size the secure fields, so they are checked.

Every bound on a per-person sum starts from how many rows one key value may have.  An undeclared
key is assumed to have up to 2^24, which made the fields of a three-table join 3-4 times wider
than the data need; a declared ``max_rows`` (checked when the data are read) narrows them.
These tests make sure the narrower fields still hold every value the declaration allows.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compare import assert_same_result
from sqlmpc import errors
from sqlmpc.catalog import DEFAULT_ROWS_PER_KEY, load_federation
from sqlmpc.oracle import run_oracle

QUERIES = Path(__file__).parent.parent / "queries"
KEY_LINE = re.compile(r"^(unique = true|max_rows = \d+)\n", re.M)


def field_bits(stats: dict) -> int:
    """The widest field any party multiplied in (from the stage meter's primitive counts)."""
    return max(int(key.split("/")[1]) for party in stats.values() for stage in party["stages"].values()
               for key in stage.get("primitives", {}) if key.startswith("multiplications/"))


@pytest.mark.mpc
def test_declared_rows_per_key_narrow_the_fields_and_keep_the_result(demo_path, federation, union_db, tmp_path):
    """The demo declares its keys (patients and persons unique, claims at most 240 rows per person).
    The same federation without those declarations must give the same result in wider fields."""
    from sqlmpc.party.embedded import EmbeddedFederation

    shutil.copytree(demo_path.parent, tmp_path / "fed")
    undeclared = tmp_path / "fed" / demo_path.name
    text = undeclared.read_text()
    assert len(KEY_LINE.findall(text)) >= 5
    undeclared.write_text(KEY_LINE.sub("", text))
    sql = (QUERIES / "app_effectiveness.sql").read_text()
    oracle = run_oracle(sql, federation, union_db)
    bits = {}
    for name, fed in (("declared", federation), ("undeclared", load_federation(undeclared))):
        with EmbeddedFederation(fed) as embedded:
            assert_same_result(embedded.query(sql), oracle, name)
            bits[name] = field_bits(embedded.last_stats)
    # Measured: 143 bits declared, 496 undeclared (the ratios' cell field is the widest).
    assert bits["declared"] < 0.5 * bits["undeclared"], bits


# -- a federation whose persons sit exactly at the declared bounds ------------------------

FEDERATION = """
[federation]
name = "at-the-bound"

[policy]
min_cell_size = 2
dominance = {{ n = 1, percent = 90 }}

[parties.hospital]
address = "127.0.0.1:7801"
[parties.hospital.tables.patients]
source = "hospital/patients.parquet"
[parties.hospital.tables.patients.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", unique = true }}
diagnosis = {{ type = "VARCHAR", role = "dimension", domain = ["IBD", "HF"], nullable = false }}

[parties.insurer]
address = "127.0.0.1:7802"
[parties.insurer.tables.claims]
source = "insurer/claims.parquet"
[parties.insurer.tables.claims.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", max_rows = {max_rows} }}
cost = {{ type = "DOUBLE", role = "measure", range = [0, 1000000], scale = 2, nullable = false }}

[parties.bureau]
address = "127.0.0.1:7803"
[parties.bureau.tables.persons]
source = "bureau/persons.parquet"
[parties.bureau.tables.persons.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", unique = true }}
floor = {{ type = "DOUBLE", role = "measure", range = [0, 1000000], scale = 2, nullable = false }}
"""
MAX_ROWS = 3
TOP = 1_000_000.0       # the range's upper end: every claim of most persons is at it


def write_at_the_bound(directory: Path, max_rows: int = MAX_ROWS) -> Path:
    pids = [f"p{i:02d}" for i in range(12)]
    tables = {
        ("hospital", "patients"): {"pid": pids, "diagnosis": ["IBD" if i % 3 else "HF" for i in range(12)]},
        # Everyone has max_rows claims at the top of the range, except two persons with one small claim.
        ("insurer", "claims"): {"pid": [p for p in pids for _ in range(max_rows)] + ["p90"],
                                "cost": [TOP] * (12 * max_rows - 2) + [0.01, 0.02, 7.5]},
        ("bureau", "persons"): {"pid": pids, "floor": [0.0, TOP] + [0.01] * 10},
    }
    for (party, name), data in tables.items():
        (directory / party).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(data), directory / party / f"{name}.parquet")
    path = directory / "federation.toml"
    path.write_text(FEDERATION.format(max_rows=max_rows))
    return path


@pytest.mark.mpc
@pytest.mark.parametrize("sql", [
    # pre-aggregated per person (per-key sums): Σ, the Σ x² of STDDEV and of the dominance rule
    "SELECT p.diagnosis, COUNT(*), SUM(c.cost), AVG(c.cost), STDDEV_SAMP(c.cost) "
    "FROM hospital.patients p JOIN insurer.claims c ON c.pid = p.pid GROUP BY p.diagnosis",
    # a condition across parties: row-level join mode, each person's rows joined one by one
    "SELECT p.diagnosis, COUNT(*), SUM(c.cost), VAR_POP(c.cost) FROM hospital.patients p "
    "JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid "
    "WHERE c.cost >= b.floor GROUP BY p.diagnosis",
])
def test_contributions_at_the_declared_bound_equal_the_oracle(sql, tmp_path):
    """Persons with max_rows claims each at the top of the range: the largest sums and squares the
    declaration allows.  A field sized too small would wrap around and give a wrong result."""
    from sqlmpc.party.embedded import EmbeddedFederation

    federation = load_federation(write_at_the_bound(tmp_path))
    with EmbeddedFederation(federation) as embedded:
        result = embedded.query(sql)
    assert_same_result(result, run_oracle(sql, federation), sql)
    assert result.rows(), "the cells are released (k = 2), so the values are compared"


def test_data_over_the_declared_bound_are_refused_before_any_query(tmp_path, capfd):
    """One key with max_rows + 1 rows: the fields would be too small, so the data are refused.
    The analyst learns the rule, table and column; only the party's operator sees the key."""
    from sqlmpc.party.embedded import EmbeddedFederation

    path = write_at_the_bound(tmp_path, max_rows=MAX_ROWS)
    claims = tmp_path / "insurer" / "claims.parquet"
    table = pq.read_table(claims)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), claims)       # p00's fourth claim
    with pytest.raises(errors.DataFileError) as info:
        with EmbeddedFederation(load_federation(path)) as embedded:
            embedded.query("SELECT COUNT(*) FROM insurer.claims c")
    err = info.value
    assert err.party == "insurer"
    assert "a key has more rows than the column's max_rows = 3; 1 row is over the limit" in str(err)
    assert "table insurer.claims, column pid" in str(err)
    assert "p00" not in str(err) and "row 38" not in str(err) and "claims.parquet" not in str(err)
    operator = capfd.readouterr().err              # the party process's own console
    assert "key 'p00' has more rows than the column's max_rows = 3" in operator
    assert "table insurer.claims, column pid, row 38" in operator


@pytest.mark.parametrize("value, fragment", [
    ("0", "'max_rows' must be a positive integer, not 0"),
    ("-2", "'max_rows' must be a positive integer, not -2"),
    ("true", "'max_rows' must be a positive integer"),
    ('"many"', "'max_rows' must be a positive integer"),
    ("2.5", "'max_rows' must be a positive integer"),
    (str(DEFAULT_ROWS_PER_KEY + 1), "'max_rows' may be at most 16,777,216"),
    ("3, unique = true", "give 'unique = true' or 'max_rows', not both"),
])
def test_a_bad_max_rows_is_a_config_error_naming_the_key(value, fragment, tmp_path):
    path = write_at_the_bound(tmp_path)
    text = path.read_text().replace(f"max_rows = {MAX_ROWS}", f"max_rows = {value}")
    path.write_text(text)
    with pytest.raises(errors.ConfigError) as info:
        load_federation(path)
    err = info.value
    assert fragment in str(err)
    assert err.location == "parties.insurer.tables.claims.columns.pid.max_rows"
    assert err.line == text[:text.index("max_rows")].count("\n") + 1


def test_max_rows_is_in_the_fingerprint(tmp_path):
    """Parties that declare different bounds would size their fields differently: their catalogs differ."""
    path = write_at_the_bound(tmp_path)
    declared = load_federation(path)
    path.write_text(path.read_text().replace(f", max_rows = {MAX_ROWS}", ", max_rows = 4"))
    assert load_federation(path).fingerprint != declared.fingerprint
    path.write_text(path.read_text().replace(", max_rows = 4", ""))
    undeclared = load_federation(path)
    assert undeclared.table("insurer", "claims").key.rows_per_key == DEFAULT_ROWS_PER_KEY
    assert undeclared.fingerprint != declared.fingerprint
