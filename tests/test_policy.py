"""Policy: each rule of the column roles refuses with its own error, naming rule, column and place."""

from __future__ import annotations

import pytest

from sqlmpc import errors
from sqlmpc.plan.bind import bind
from sqlmpc.sql import parse_query


def check(federation, sql):
    return bind(parse_query(sql), federation, sql)


REFUSALS = [
    # (sql, error class, rule, column, line, column number)
    ("SELECT p.pid, COUNT(*) FROM hospital.patients p GROUP BY p.pid",
     errors.KeyColumnPolicyError, "key-only-in-join", "pid", 1, 58),
    ("SELECT COUNT(*) FROM hospital.patients p WHERE p.pid = 'p0001'",
     errors.KeyColumnPolicyError, "key-only-in-join", "pid", 1, 48),
    ("SELECT COUNT(*) FROM hospital.patients p\nGROUP BY p.pid",
     errors.KeyColumnPolicyError, "key-only-in-join", "pid", 2, 10),
    ("SELECT c.cost_eur FROM insurer.claims c",
     errors.PersonLevelOutputError, "no-person-level-output", "cost_eur", 1, 8),
    ("SELECT c.year, c.cost_eur FROM insurer.claims c GROUP BY c.year",
     errors.PersonLevelOutputError, "no-person-level-output", "cost_eur", 1, 16),
    ("SELECT c.category, COUNT(*) FROM insurer.claims c",
     errors.PersonLevelOutputError, "no-person-level-output", "category", 1, 8),
    ("SELECT COUNT(*) FROM insurer.claims c GROUP BY c.cost_eur",
     errors.GroupByPolicyError, "group-by-on-dimensions", "cost_eur", 1, 48),
    ("SELECT COUNT(*) FROM hospital.patients p JOIN bureau.persons b ON p.pid = b.pid\n"
     "GROUP BY p.sex || b.region",
     errors.GroupByPolicyError, "group-by-on-dimensions", None, 2, 10),
    ("SELECT COUNT(*) FROM hospital.patients p JOIN insurer.claims c ON p.diagnosis_year = c.year",
     errors.JoinPolicyError, "join", "diagnosis_year", 1, 67),
    ("SELECT COUNT(DISTINCT c.category) FROM insurer.claims c",
     errors.PolicyError, "policy", None, 1, 8),
    ("SELECT SUM(p.pid) FROM hospital.patients p",
     errors.KeyColumnPolicyError, "key-only-in-join", "pid", 1, 12),
]


@pytest.mark.parametrize("sql, cls, rule, column, line, col", REFUSALS)
def test_policy_refusals(federation, sql, cls, rule, column, line, col):
    with pytest.raises(cls) as info:
        check(federation, sql)
    err = info.value
    assert isinstance(err, errors.ProgrammingError)
    assert err.rule == rule
    assert err.column_name == column
    assert (err.line, err.column) == (line, col)
    assert f"line {line}, column {col}" in str(err)
    assert f"[{rule}]" in str(err)


def test_select_star_is_refused_as_person_level(federation):
    with pytest.raises(errors.ProgrammingError) as info:
        check(federation, "SELECT * FROM hospital.patients")
    assert "person-level" in str(info.value)
    assert (info.value.line, info.value.column) == (1, 8)


def test_join_between_parties_not_allowed(tmp_path, demo_path):
    from sqlmpc.catalog import load_federation

    text = demo_path.read_text()
    strict = tmp_path / "strict.toml"
    strict.write_text(text)
    local = tmp_path / "local.toml"
    local.write_text('[policy]\nmin_cell_size = 10\njoins = [["hospital", "bureau"]]\n')
    fed = load_federation(demo_path, local_policy=local)
    with pytest.raises(errors.JoinPolicyError) as info:
        check(fed, "SELECT COUNT(*) FROM hospital.patients p JOIN insurer.claims c ON p.pid = c.pid")
    assert "hospital" in str(info.value) and "insurer" in str(info.value)
    check(fed, "SELECT COUNT(*) FROM hospital.patients p JOIN bureau.persons b ON p.pid = b.pid")


@pytest.mark.parametrize("sql, cls, fragment", [
    ("SELECT COUNT(*) FROM hospital.nothing", errors.UnknownTableError, "has no table 'nothing'"),
    ("SELECT COUNT(*) FROM nobody.patients", errors.UnknownTableError, "unknown party 'nobody'"),
    ("SELECT COUNT(*) FROM hospital.patients p WHERE p.diagnosys = 'IBD'", errors.UnknownColumnError,
     "did you mean 'diagnosis'"),
    ("SELECT COUNT(*) FROM hospital.patients p JOIN insurer.claims c ON p.pid = c.pid WHERE yeer = 2024",
     errors.UnknownColumnError, "does not exist"),
    ("SELECT COUNT(*) FROM hospital.patients p JOIN bureau.persons b ON p.pid = b.pid GROUP BY pid",
     errors.AmbiguousColumnError, "p.pid or b.pid"),
])
def test_name_resolution_errors(federation, sql, cls, fragment):
    with pytest.raises(cls) as info:
        check(federation, sql)
    assert fragment in str(info.value)
    assert info.value.line == 1 and info.value.column is not None


def test_match_test_on_left_joined_key_is_allowed(federation):
    q = check(federation, "SELECT CASE WHEN u.pid IS NULL THEN 'no' ELSE 'yes' END AS app, COUNT(*) "
                          "FROM hospital.patients p LEFT JOIN hospital.app_usage u ON u.pid = p.pid GROUP BY app")
    assert q.nullable_relations == {"u"}


def test_declared_dominance_rule_guards_sums_of_measures_not_counts(tmp_path, demo_path):
    from fractions import Fraction

    from sqlmpc.catalog import load_federation
    from sqlmpc.plan.compile import compile

    local = tmp_path / "local.toml"
    local.write_text("[policy]\nmin_cell_size = 10\ndominance = { n = 2, percent = 25.0 }\n")
    fed = load_federation(demo_path, local_policy=local)
    plan = compile("SELECT c.year, SUM(c.cost_eur) FROM insurer.claims c GROUP BY c.year", fed)
    dominance = [g for g in plan.guards if g.kind == "dominance"]
    assert len(dominance) == 1 and dominance[0].constant == Fraction(2) / Fraction(1, 4) ** 2   # n / p²
    assert {m.kind for m in plan.moments if m.name in dominance[0].moments} == {"sum", "sum2"}
    counts = compile("SELECT c.year, COUNT(*) FROM insurer.claims c GROUP BY c.year", fed)
    assert [g.kind for g in counts.guards] == ["contributors"]
