"""Planner: what each party computes alone, what is left to MPC, and what will be opened."""

from __future__ import annotations

from sqlglot import exp

from sqlmpc.plan.compile import compile

APP = ("SELECT b.age_band, CASE WHEN u.pid IS NULL THEN 'no app' ELSE 'app' END AS app_use, "
       "COUNT(DISTINCT p.pid), AVG(c.cost_eur), VAR_SAMP(c.cost_eur) "
       "FROM hospital.patients p LEFT JOIN hospital.app_usage u ON u.pid = p.pid "
       "JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid "
       "WHERE p.diagnosis = 'IBD' AND c.year = 2024 GROUP BY b.age_band, app_use")


def part(plan, relation):
    (p,) = plan.parts_of(relation)
    return p


def test_single_party_filters_run_at_their_owner(federation):
    plan = compile(APP, federation)
    assert part(plan, "p").party == "hospital" and "p.diagnosis = 'IBD'" in part(plan, "p").sql
    assert part(plan, "c").party == "insurer" and "c.year = 2024" in part(plan, "c").sql
    assert "IBD" not in part(plan, "c").sql and "2024" not in part(plan, "p").sql
    assert "WHERE" not in part(plan, "b").sql
    assert plan.row_filter is None          # nothing spans parties
    assert plan.mode == "join"


def test_same_party_join_runs_locally(federation):
    plan = compile(APP, federation)
    assert plan.relations == ("p", "c", "b")                  # app_usage joined inside the hospital
    assert "LEFT JOIN hospital.app_usage AS u" in part(plan, "p").sql
    assert [j.relation for j in plan.joins] == ["c", "b"]


def test_group_codes_are_local_one_hot_sources(federation):
    plan = compile(APP, federation)
    assert plan.cell_relations == ("b", "p")
    assert part(plan, "b").column("cell").bound == 6          # six age bands
    assert part(plan, "p").column("cell").bound == 2          # app / no app, computed at the hospital
    assert "LIST_POSITION" in part(plan, "b").sql
    assert plan.grid.size == 12


def test_left_joined_party_gets_absent_values(federation):
    plan = compile("SELECT b.region, COUNT(*) FROM insurer.claims c "
                                "LEFT JOIN bureau.persons b ON b.pid = c.pid GROUP BY b.region", federation)
    assert plan.nullable == ("b",)
    cell = part(plan, "b").column("cell")
    assert cell.bound == 5 and cell.absent == 4               # NULL region: the last code


def test_squares_for_variance_are_computed_locally(federation):
    plan = compile(APP, federation)
    assert plan.per_key                     # no condition spans parties: each sums per person first
    for m in plan.moments:                  # a product of at most one local column per group
        factors = [f for f in m.expr.find_all(exp.Column)]
        assert len({f.table for f in factors}) == len(factors), m.expr.sql()
    squares = [c for c in part(plan, "c").columns if c.kind == "value" and c.scale == 4]
    assert squares, "Σ cost² per person must be a local column at the insurer (scale 2 + 2)"
    assert "GROUP BY" in part(plan, "c").sql


def test_cross_party_predicate_stays_secure(federation):
    plan = compile("SELECT COUNT(*) FROM hospital.patients p JOIN insurer.claims c "
                                "ON c.pid = p.pid WHERE c.year = p.diagnosis_year + 1", federation)
    assert plan.row_filter is not None
    assert {c.table for c in plan.row_filter.find_all(exp.Column)} == {"p", "c"}
    assert "diagnosis_year" in part(plan, "p").sql and "WHERE" not in part(plan, "p").sql


def test_one_table_is_pre_aggregated_by_its_owner(federation):
    plan = compile("SELECT c.category, SUM(c.cost_eur), MIN(c.year) "
                                "FROM insurer.claims c WHERE c.year >= 2023 GROUP BY c.category", federation)
    assert plan.mode == "local"
    p = part(plan, "c")
    assert "GROUP BY" in p.sql and p.party == "insurer"
    assert [l.what for l in plan.leakage] == ["input sizes", "cells passing the release rules",
                                              "secondary suppression", "released values"]


def test_where_on_a_dimension_narrows_its_domain(federation):
    plan = compile("SELECT p.diagnosis, COUNT(*) FROM hospital.patients p "
                                "WHERE p.diagnosis IN ('IBD', 'HF') GROUP BY p.diagnosis", federation)
    assert set(plan.grid.groups[0].domain) == {"IBD", "HF"}


def test_plan_hash_is_stable_and_sensitive(federation):
    a = compile(APP, federation).digest
    assert a == compile(APP, federation).digest
    assert a != compile(APP.replace("2024", "2023"), federation).digest


def test_leakage_declaration_names_every_opening(federation):
    plan = compile(APP, federation)
    assert [l.what for l in plan.leakage] == ["input sizes", "join tokens", "cells passing the release rules",
                                              "secondary suppression", "released values"]
    assert plan.leakage[-1].per_cell == 1 + 2 + 2            # COUNT opened as is; AVG and VAR_SAMP as ratios


def test_explain_shows_local_sql_secure_part_and_leakage(federation):
    from sqlmpc.plan.explain import explain
    text = explain(compile(APP, federation))
    assert "-- hospital" in text and "-- insurer" in text and "-- bureau" in text
    assert "Secure part" in text and "Leakage declaration" in text


def test_explain_names_every_release_rule_of_min_and_max(federation):
    from sqlmpc.plan.explain import explain

    text = explain(compile("SELECT b.region, MIN(b.age_band) AS youngest FROM bureau.persons b GROUP BY b.region",
                           federation))
    assert "None" not in text
    assert "MIN/MAX: the first value from the extreme end that >= 10 persons hold (" in text
