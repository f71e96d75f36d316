"""The demo generator: deterministic, valid against its own catalog, and carrying the signal."""

from __future__ import annotations

import pytest

from sqlmpc.catalog import load_federation
from sqlmpc.demo import generate, generate_horizontal
from sqlmpc.local.data import open_party_database, open_union_database

PERSONS = 20_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return load_federation(generate(tmp_path_factory.mktemp("demo"), persons=PERSONS))


@pytest.fixture(scope="module")
def db(demo):
    return open_union_database(demo)     # validates every table against the catalog


def test_layout_and_catalog(demo):
    root = demo.path.parent
    assert demo.path.name == "federation.toml"
    assert demo.party_names == ("hospital", "insurer", "bureau")
    assert [p.address for p in demo.parties] == ["127.0.0.1:7471", "127.0.0.1:7472", "127.0.0.1:7473"]
    assert {t.qualified_name for t in demo.tables} == {
        "hospital.patients", "hospital.app_usage", "hospital.medication", "insurer.claims", "insurer.pharmacy",
        "bureau.persons"}
    for table in demo.tables:
        assert table.source.parent == root / table.party and table.source.suffix == ".parquet"
    assert 'source = "hospital/patients.parquet"' in demo.path.read_text()
    assert demo.policy.min_cell_size == 10


def test_same_seed_same_bytes(tmp_path):
    first = generate(tmp_path / "a", persons=500, seed=3)
    second = generate(tmp_path / "b", persons=500, seed=3)
    other = generate(tmp_path / "c", persons=500, seed=4)
    files = sorted(p.relative_to(first.parent) for p in first.parent.rglob("*") if p.is_file())
    assert len(files) == 7
    for name in files:
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name
    assert (first.parent / "bureau/persons.parquet").read_bytes() != (other.parent / "bureau/persons.parquet").read_bytes()
    assert load_federation(first).fingerprint == load_federation(second).fingerprint


def test_every_party_database_validates(demo):
    for party in demo.party_names:
        open_party_database(demo, party)


def test_sizes_and_shares(db):
    def one(sql):
        return db.execute(sql).fetchall()[0]

    assert one("SELECT COUNT(*), COUNT(DISTINCT pid) FROM bureau.persons") == (PERSONS, PERSONS)
    patients, ibd = one("SELECT COUNT(*), COUNT(*) FILTER (WHERE diagnosis = 'IBD') FROM hospital.patients")
    assert 0.25 < patients / PERSONS < 0.35
    users, non_ibd_users = one("SELECT COUNT(*), COUNT(*) FILTER (WHERE p.diagnosis <> 'IBD') "
                               "FROM hospital.app_usage u JOIN hospital.patients p USING (pid)")
    assert non_ibd_users == 0 and 0.3 < users / ibd < 0.5
    # Several claims per person and year; pids shared by all parties.
    per_year = one("SELECT COUNT(*) / COUNT(DISTINCT (pid, year)) FROM insurer.claims")[0]
    assert per_year > 1.5
    assert one("SELECT COUNT(*) FROM hospital.patients p ANTI JOIN bureau.persons b USING (pid)") == (0,)


def test_app_users_cost_less_next_year(db):
    rows = dict(db.execute("""
        WITH ibd AS (
            SELECT p.pid, p.diagnosis_year, u.pid IS NOT NULL AS app
            FROM hospital.patients p LEFT JOIN hospital.app_usage u USING (pid)
            WHERE p.diagnosis = 'IBD' AND p.diagnosis_year + 1 BETWEEN 2020 AND 2025),
        yearly AS (SELECT pid, year, SUM(cost_eur) AS cost FROM insurer.claims GROUP BY pid, year)
        SELECT ibd.app, AVG(COALESCE(y.cost, 0))
        FROM ibd LEFT JOIN yearly y ON y.pid = ibd.pid AND y.year = ibd.diagnosis_year + 1
        GROUP BY ibd.app""").fetchall())
    assert 0.65 < rows[True] / rows[False] < 0.9


def test_costs_rise_with_age(db):
    rows = db.execute("""
        SELECT b.age_band, SUM(c.cost_eur) / COUNT(DISTINCT c.pid)
        FROM insurer.claims c JOIN bureau.persons b USING (pid) WHERE c.year = 2024
        GROUP BY b.age_band ORDER BY b.age_band""").fetchall()
    costs = [cost for _, cost in rows]      # '0-17' < '18-34' < ... < '80+' sorts by age
    assert costs == sorted(costs)


def test_sessions_go_with_lower_cost(db):
    corr = db.execute("SELECT CORR(u.sessions, c.cost_eur) FROM hospital.app_usage u "
                      "JOIN insurer.claims c USING (pid) WHERE c.year = 2024").fetchall()[0][0]
    assert corr < 0


def test_horizontal(tmp_path):
    fed = load_federation(generate_horizontal(tmp_path, rows_per_party=3000))
    assert fed.party_names == ("hospital_a", "hospital_b", "hospital_c")
    keys = {t.key.key_space for t in fed.tables}
    assert keys == {"hospital_a_mrn", "hospital_b_mrn", "hospital_c_mrn"}
    con = open_union_database(fed)
    for party in fed.party_names:
        assert con.execute(f"SELECT COUNT(*) FROM {party}.admissions").fetchall() == [(3000,)]


def test_horizontal_with_two_parties_is_an_insecure_demo(tmp_path):
    fed = load_federation(generate_horizontal(tmp_path, rows_per_party=100, parties=2))
    assert fed.insecure_demo and len(fed.parties) == 2
