"""The federation file loader: values, one test per validation rule, fingerprint, local policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sqlmpc.catalog import Dominance, Role, load_federation
from sqlmpc.errors import ConfigError

VALID = """\
[federation]
name = "care-demo"

[policy]
min_cell_size = 10
joins = [["hospital", "insurer"], ["hospital", "bureau"], ["insurer", "bureau"]]
dominance = { n = 2, percent = 85.0 }
analysts = ["alice", "bob"]

[parties.hospital]
address = "127.0.0.1:7471"

[parties.hospital.tables.patients]
source = "hospital/patients.parquet"

[parties.hospital.tables.patients.columns]
pid            = { type = "VARCHAR", role = "key", key_space = "pseudonym", unique = true }
diagnosis      = { type = "VARCHAR", role = "dimension", domain = ["IBD", "HF", "DM2", "COPD"] }
diagnosis_year = { type = "INTEGER", role = "dimension", domain = { from = 2015, to = 2024 } }
cost_eur       = { type = "DOUBLE",  role = "measure", range = [0, 250000], scale = 2 }
postcode       = { type = "VARCHAR", role = "attribute" }

[parties.insurer]
address = "127.0.0.1:7472"

[parties.insurer.tables.claims]
source = "insurer/claims.csv"

[parties.insurer.tables.claims.columns]
pid  = { type = "VARCHAR", role = "key", key_space = "pseudonym" }
year = { type = "INTEGER", role = "dimension", domain = { from = 2020, to = 2025 } }

[parties.bureau]
address = "127.0.0.1:7473"

[parties.bureau.tables.persons]
source = "bureau.duckdb"
table = "persons"

[parties.bureau.tables.persons.columns]
pid = { type = "VARCHAR", role = "key", key_space = "pseudonym", unique = true }
sex = { type = "VARCHAR", role = "dimension", domain = ["F", "M"] }
"""


def write(tmp_path: Path, text: str, name: str = "federation.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def load_broken(tmp_path: Path, old: str, new: str) -> tuple[ConfigError, str]:
    assert old in VALID, old
    text = VALID.replace(old, new, 1)
    with pytest.raises(ConfigError) as info:
        load_federation(write(tmp_path, text))
    return info.value, text


# -- a valid file ------------------------------------------------------------------

def test_valid_file_loads_into_values(tmp_path):
    fed = load_federation(write(tmp_path, VALID))
    assert fed.name == "care-demo" and not fed.insecure_demo
    assert fed.party_names == ("hospital", "insurer", "bureau")
    assert fed.party("hospital").address == "127.0.0.1:7471"
    patients = fed.table("hospital", "patients")
    assert patients.source == (tmp_path / "hospital" / "patients.parquet").resolve()
    assert patients.format == "parquet"
    assert [c.name for c in patients.columns] == ["pid", "diagnosis", "diagnosis_year", "cost_eur", "postcode"]
    pid, diagnosis, year, cost, postcode = patients.columns
    assert pid.role is Role.KEY and pid.key_space == "pseudonym" and pid.unique and not pid.nullable
    assert diagnosis.domain == ("IBD", "HF", "DM2", "COPD") and diagnosis.nullable
    assert year.domain == tuple(range(2015, 2025))
    assert cost.role is Role.MEASURE and cost.range == (0, 250000) and cost.scale == 2
    assert postcode.role is Role.ATTRIBUTE
    assert fed.table("insurer", "claims").format == "csv"
    persons = fed.table("bureau", "persons")
    assert persons.format == "duckdb" and persons.source_table == "persons"
    assert fed.policy.min_cell_size == 10
    assert fed.policy.dominance == Dominance(2, 85.0)
    assert fed.policy.analysts == frozenset({"alice", "bob"})
    assert fed.policy.may_join("hospital", "bureau")
    assert len(fed.fingerprint) == 64


def test_policy_defaults(tmp_path):
    text = VALID.replace(VALID[VALID.index("[policy]"):VALID.index("[parties.hospital]")], "")
    policy = load_federation(write(tmp_path, text)).policy
    assert policy.min_cell_size == 10 and policy.joins is None and policy.dominance is None
    assert policy.analysts is None


# -- one test per rule -------------------------------------------------------------

def test_toml_syntax_error_carries_line(tmp_path):
    err, text = load_broken(tmp_path, 'address = "127.0.0.1:7472"', 'address = ')
    assert err.line == text.splitlines().index("address = ") + 1
    assert "TOML syntax error" in str(err) and str(tmp_path) in str(err)


def test_unknown_key_suggests_the_right_one(tmp_path):
    err, text = load_broken(tmp_path, "min_cell_size = 10", "min_cel_size = 10")
    assert err.location == "policy.min_cel_size"
    assert err.line == line_of(text, "min_cel_size")
    assert "did you mean 'min_cell_size'" in str(err)
    assert err.path == str(tmp_path / "federation.toml")


def test_unknown_column_key(tmp_path):
    err, text = load_broken(tmp_path, 'role = "attribute" }', 'role = "attribute", nulable = true }')
    assert err.location == "parties.hospital.tables.patients.columns.postcode.nulable"
    assert err.line == line_of(text, "postcode")
    assert "did you mean 'nullable'" in str(err)


def test_missing_required_field(tmp_path):
    err, text = load_broken(tmp_path, 'source = "insurer/claims.csv"\n', "")
    assert err.location == "parties.insurer.tables.claims.source"
    assert err.line == line_of(text, "[parties.insurer.tables.claims]")
    assert "missing required key 'source'" in str(err)


def test_unknown_role(tmp_path):
    err, text = load_broken(tmp_path, 'role = "attribute"', 'role = "atribute"')
    assert err.location == "parties.hospital.tables.patients.columns.postcode.role"
    assert err.line == line_of(text, "postcode")
    assert "unknown role 'atribute'" in str(err) and "did you mean 'attribute'" in str(err)


def test_unknown_type(tmp_path):
    err, text = load_broken(tmp_path, 'cost_eur       = { type = "DOUBLE"', 'cost_eur       = { type = "DUBLE"')
    assert err.location == "parties.hospital.tables.patients.columns.cost_eur.type"
    assert err.line == line_of(text, "cost_eur ")
    assert "did you mean 'DOUBLE'" in str(err)


def test_dimension_without_domain(tmp_path):
    err, text = load_broken(tmp_path, 'sex = { type = "VARCHAR", role = "dimension", domain = ["F", "M"] }',
                            'sex = { type = "VARCHAR", role = "dimension" }')
    assert err.location == "parties.bureau.tables.persons.columns.sex.domain"
    assert err.line == line_of(text, "sex = ")
    assert "needs a public 'domain'" in str(err)


def test_measure_without_range(tmp_path):
    err, text = load_broken(tmp_path, "range = [0, 250000], ", "")
    assert err.location == "parties.hospital.tables.patients.columns.cost_eur.range"
    assert err.line == line_of(text, "cost_eur ")


def test_measure_range_lo_above_hi(tmp_path):
    err, text = load_broken(tmp_path, "range = [0, 250000]", "range = [250000, 0]")
    assert err.location == "parties.hospital.tables.patients.columns.cost_eur.range"
    assert err.line == line_of(text, "cost_eur ")
    assert "lo > hi" in str(err)


def test_key_without_key_space(tmp_path):
    err, text = load_broken(tmp_path, 'pid  = { type = "VARCHAR", role = "key", key_space = "pseudonym" }',
                            'pid  = { type = "VARCHAR", role = "key" }')
    assert err.location == "parties.insurer.tables.claims.columns.pid.key_space"
    assert err.line == line_of(text, 'pid  = {')


def test_key_cannot_be_nullable(tmp_path):
    err, text = load_broken(tmp_path, 'pid  = { type = "VARCHAR", role = "key", key_space = "pseudonym" }',
                            'pid  = { type = "VARCHAR", role = "key", key_space = "pseudonym", nullable = true }')
    assert err.location == "parties.insurer.tables.claims.columns.pid.nullable"
    assert err.line == line_of(text, 'pid  = {')
    assert "cannot be nullable" in str(err)


def test_duplicate_column_names(tmp_path):
    err, text = load_broken(tmp_path, 'sex = { type = "VARCHAR", role = "dimension", domain = ["F", "M"] }',
                            'sex = { type = "VARCHAR", role = "dimension", domain = ["F", "M"] }\n'
                            'SEX = { type = "VARCHAR", role = "attribute" }')
    assert err.location == "parties.bureau.tables.persons.columns.SEX"
    assert err.line == line_of(text, "SEX = ")
    assert "duplicate column name 'SEX'" in str(err)


def test_duplicate_toml_key_is_a_syntax_error_with_line(tmp_path):
    err, text = load_broken(tmp_path, 'sex = { type = "VARCHAR", role = "dimension", domain = ["F", "M"] }',
                            'sex = { type = "VARCHAR", role = "dimension", domain = ["F", "M"] }\n'
                            'sex = { type = "VARCHAR", role = "attribute" }')
    assert err.line == len(text[:text.rindex("sex = ")].splitlines()) + 1


@pytest.mark.parametrize("old, new, found", [
    ('pid            = { type = "VARCHAR", role = "key", key_space = "pseudonym", unique = true }\n', "",
     "found none"),
    ('postcode       = { type = "VARCHAR", role = "attribute" }',
     'postcode       = { type = "VARCHAR", role = "key", key_space = "postcode" }', "found 2: pid, postcode"),
])
def test_exactly_one_key_column(tmp_path, old, new, found):
    err, text = load_broken(tmp_path, old, new)
    assert err.location == "parties.hospital.tables.patients.columns"
    assert err.line == line_of(text, "[parties.hospital.tables.patients.columns]")
    assert "exactly one key column" in str(err) and found in str(err)


def test_two_parties_refused_without_insecure_demo(tmp_path):
    two = VALID[:VALID.index("[parties.bureau]")].replace(', ["hospital", "bureau"], ["insurer", "bureau"]', "")
    with pytest.raises(ConfigError) as info:
        load_federation(write(tmp_path, two))
    err = info.value
    assert err.location == "parties" and err.line == line_of(two, "[parties.hospital]")
    assert "no secrecy with 2 parties" in str(err) and "insecure_demo" in str(err)
    demo = two.replace('name = "care-demo"', 'name = "care-demo"\ninsecure_demo = true')
    assert load_federation(write(tmp_path, demo)).insecure_demo


def test_join_naming_unknown_party(tmp_path):
    err, text = load_broken(tmp_path, '["insurer", "bureau"]]', '["insurer", "buro"]]')
    assert err.location == "policy.joins" and err.line == line_of(text, "joins =")
    assert "unknown party 'buro'" in str(err) and "did you mean 'bureau'" in str(err)


@pytest.mark.parametrize("value", ["0", "-3"])
def test_min_cell_size_at_least_one(tmp_path, value):
    err, text = load_broken(tmp_path, "min_cell_size = 10", f"min_cell_size = {value}")
    assert err.location == "policy.min_cell_size" and err.line == line_of(text, "min_cell_size")


def test_min_cell_size_must_be_an_integer(tmp_path):
    err, text = load_broken(tmp_path, "min_cell_size = 10", "min_cell_size = true")
    assert err.location == "policy.min_cell_size" and "must be an integer" in str(err)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:99999", ":7472", "host name:7472", "h:port"])
def test_bad_address(tmp_path, address):
    err, text = load_broken(tmp_path, 'address = "127.0.0.1:7472"', f'address = "{address}"')
    assert err.location == "parties.insurer.address"
    assert err.line == line_of(text, f'address = "{address}"')
    assert "bad address" in str(err)


def test_ipv6_address_is_fine(tmp_path):
    fed = load_federation(write(tmp_path, VALID.replace('"127.0.0.1:7472"', '"[::1]:7472"')))
    assert fed.party("insurer").address == "[::1]:7472"


def test_unknown_source_format(tmp_path):
    err, text = load_broken(tmp_path, 'source = "insurer/claims.csv"', 'source = "insurer/claims.xlsx"')
    assert err.location == "parties.insurer.tables.claims.source" and err.line == line_of(text, "claims.xlsx")


def test_duckdb_source_needs_table(tmp_path):
    err, text = load_broken(tmp_path, 'table = "persons"\n', "")
    assert err.location == "parties.bureau.tables.persons.table"
    assert err.line == line_of(text, "[parties.bureau.tables.persons]")


def test_domain_values_must_fit_type(tmp_path):
    err, _ = load_broken(tmp_path, 'domain = ["F", "M"]', 'domain = ["F", 2]')
    assert err.location == "parties.bureau.tables.persons.columns.sex.domain" and "does not fit" in str(err)


def test_role_specific_key_on_wrong_role(tmp_path):
    err, text = load_broken(tmp_path, 'role = "attribute" }', 'role = "attribute", range = [0, 1] }')
    assert err.location == "parties.hospital.tables.patients.columns.postcode.range"
    assert "does not apply to an attribute column" in str(err)


def test_data_files_are_not_opened(tmp_path):
    # None of the sources exist: loading must still work (a party only has its own files).
    fed = load_federation(write(tmp_path, VALID))
    assert not any(t.source.exists() for t in fed.tables)


# -- fingerprint ----------------------------------------------------------------------

def test_fingerprint_stable_and_independent_of_location(tmp_path):
    first = load_federation(write(tmp_path, VALID)).fingerprint
    assert load_federation(write(tmp_path, VALID)).fingerprint == first
    elsewhere = tmp_path / "copy" / "deeper"
    elsewhere.mkdir(parents=True)
    shutil.copy(tmp_path / "federation.toml", elsewhere / "other-name.toml")
    assert load_federation(elsewhere / "other-name.toml").fingerprint == first
    # Formatting does not count, content does.
    reformatted = VALID.replace("pid            = {", "pid = {")
    assert load_federation(write(tmp_path, reformatted, "b.toml")).fingerprint == first
    changed = VALID.replace("min_cell_size = 10", "min_cell_size = 11")
    assert load_federation(write(tmp_path, changed, "c.toml")).fingerprint != first


# -- local policy -----------------------------------------------------------------------

def test_local_policy_may_be_stricter(tmp_path):
    fed_path = write(tmp_path, VALID)
    local = write(tmp_path, '[policy]\nmin_cell_size = 20\njoins = [["hospital", "bureau"]]\n'
                            'dominance = { n = 3, percent = 80 }\nanalysts = ["alice"]\n', "local.toml")
    fed = load_federation(fed_path, local_policy=local)
    assert fed.policy.min_cell_size == 20
    assert fed.policy.joins == frozenset({frozenset({"hospital", "bureau"})})
    assert not fed.policy.may_join("hospital", "insurer")
    assert fed.policy.dominance == Dominance(3, 80.0)
    assert fed.policy.analysts == frozenset({"alice"})
    # Every party agrees on the shared catalog's fingerprint whatever its local policy.
    assert fed.fingerprint == load_federation(fed_path).fingerprint


def test_local_policy_adds_dominance_where_the_federation_has_none(tmp_path):
    text = VALID.replace("dominance = { n = 2, percent = 85.0 }\n", "")
    local = write(tmp_path, "[policy]\ndominance = { n = 1, percent = 90 }\n", "local.toml")
    assert load_federation(write(tmp_path, text), local_policy=local).policy.dominance == Dominance(1, 90.0)


@pytest.mark.parametrize("policy, key, message", [
    ("min_cell_size = 5", "min_cell_size", "stricter"),
    ('joins = [["hospital", "insurer"], ["hospital", "hospital2"]]', "joins", "unknown party"),
    ("dominance = { n = 2, percent = 95 }", "dominance", "stricter"),
    ("dominance = { n = 1, percent = 85 }", "dominance", "stricter"),
    ('dominance = { rule = "p-percent", percent = 10 }', "dominance", "not replace it"),
    ('analysts = ["alice", "mallory"]', "analysts", "stricter"),
])
def test_local_policy_looser_is_refused(tmp_path, policy, key, message):
    local = write(tmp_path, f"[policy]\n{policy}\n", "local.toml")
    with pytest.raises(ConfigError) as info:
        load_federation(write(tmp_path, VALID), local_policy=local)
    err = info.value
    assert err.location == f"policy.{key}" and err.line == 2 and err.path == str(local)
    assert message in str(err)


def test_local_policy_holds_only_policy(tmp_path):
    local = write(tmp_path, "[policy]\nmin_cell_size = 20\n\n[parties.x]\naddress = \"h:1\"\n", "local.toml")
    with pytest.raises(ConfigError) as info:
        load_federation(write(tmp_path, VALID), local_policy=local)
    assert info.value.location == "parties" and info.value.line == 4


# -- what an analyst is shown ---------------------------------------------------------

def test_the_shared_catalog_holds_no_partys_private_settings(tmp_path):
    from sqlmpc.catalog import shared_text

    private = VALID.replace('source = "hospital/patients.parquet"',
                            'source = "hospital-private/2024/patients.parquet"  # the EHR export') \
        .replace('source = "insurer/claims.csv"', 'source = "postgresql"\ntable = "dwh_secret.claims_2024"') \
        .replace('address = "127.0.0.1:7472"\n', 'address = "127.0.0.1:7472"\nworkers = 4\n')
    # The insurer's connection is in its own local file, never in the shared one.
    local = write(tmp_path, '[postgresql]\ndsn = "host=db.insurer.internal user=sqlmpc_reader"\n'
                            'password_file = "/etc/sqlmpc/pw"\n', "insurer-local.toml")
    fed = load_federation(write(tmp_path, private), local_policy=local, party="insurer")
    assert fed.party("insurer").connection("postgresql").dsn == "host=db.insurer.internal user=sqlmpc_reader"
    text = shared_text(fed)
    for secret in ("hospital-private", "EHR export", "dwh_secret", "db.insurer.internal", "sqlmpc_reader",
                   "/etc/sqlmpc/pw", "workers", "bureau.duckdb"):
        assert secret not in text, secret
    shown = load_federation(write(tmp_path, text, "shown.toml"))
    assert shown.policy == fed.policy and shown.party_names == fed.party_names
    assert [(t.party, t.name, t.format, t.columns) for t in shown.tables] == \
        [(t.party, t.name, t.format, t.columns) for t in fed.tables]
