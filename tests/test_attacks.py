"""Disclosure attacks, written as a curious analyst would write them, against the demo federation.

Each test picks a target with plain DuckDB on the union of all parties' data (the analyst's
background knowledge: who the target is, not what the federation holds about them), runs
ordinary SQL through the real three-party MPC federation, and asserts that nothing released
equals the target's exact value or is a count of 1..k-1 — and that the secure result is the
plaintext oracle's, so the rules hold in both.  Every attack would succeed if its rule broke.
"""

from __future__ import annotations

import math

import pytest

from compare import assert_same_result
from sqlmpc import errors
from sqlmpc.oracle import run_oracle

pytestmark = pytest.mark.mpc

K = 10


@pytest.fixture(scope="module")
def embedded(federation):
    from sqlmpc.party.embedded import EmbeddedFederation

    with EmbeddedFederation(federation) as fed:
        yield fed


@pytest.fixture(scope="module")
def ask(embedded, federation, union_db):
    """Run a query through MPC; check it against the oracle; return the result."""
    def run(sql: str):
        result = embedded.query(sql)
        assert_same_result(result, run_oracle(sql, federation, union_db), sql)
        return result
    return run


def numbers(result) -> list[float]:
    return [float(v) for row in result.rows() for v in row
            if isinstance(v, (int, float)) or type(v).__name__ == "Decimal"]


def assert_no_small_count(result, *count_columns: int) -> None:
    for row in result.rows():
        for i in count_columns:
            assert row[i] is None or row[i] >= K, (row, "a count below k (zero included) was released")


def assert_not_released(value: float, result) -> None:
    for got in numbers(result):
        assert not math.isclose(got, value, rel_tol=1e-9, abs_tol=1e-6), (value, result.rows())


@pytest.fixture(scope="module")
def target(union_db):
    """A patient whose diagnosis, diagnosis year, sex, age band and region are shared by nobody else."""
    row = first(union_db, """
        SELECT p.diagnosis, p.diagnosis_year, p.sex, b.age_band, b.region, any_value(p.pid) AS pid
        FROM hospital.patients p JOIN bureau.persons b ON b.pid = p.pid JOIN insurer.claims c ON c.pid = p.pid
        WHERE c.year = 2024 GROUP BY ALL HAVING COUNT(DISTINCT p.pid) = 1 ORDER BY ALL LIMIT 1""")
    assert row is not None, "the demo has a person unique on five dimensions"
    diagnosis, year, sex, age, region, pid = row
    cost = first(union_db, f"SELECT SUM(cost_eur) FROM insurer.claims WHERE pid = '{pid}' AND year = 2024")[0]
    conds = {"p.diagnosis": diagnosis, "p.diagnosis_year": year, "p.sex": sex, "b.age_band": age, "b.region": region}
    return {"where": where(conds), "conds": conds, "cost_2024": float(cost)}


def first(db, sql: str):
    """The first row of a plaintext query (the analyst's background knowledge), or None."""
    rows = db.execute(sql).fetchall()
    return rows[0] if rows else None


def where(conds: dict) -> str:
    return " AND ".join(f"{column} = {value!r}" for column, value in conds.items())


JOIN3 = ("FROM hospital.patients p JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid "
         "WHERE c.year = 2024")


# -- 1. a FILTER that matches one person ------------------------------------------------------


def test_sum_filtered_to_one_person_inside_a_large_cell(ask, target):
    result = ask(f"SELECT p.diagnosis, COUNT(DISTINCT p.pid) AS patients, "
                 f"SUM(c.cost_eur) FILTER (WHERE {target['where']}) AS target_cost {JOIN3} GROUP BY p.diagnosis")
    assert_not_released(target["cost_2024"], result)
    assert all(row[2] is None for row in result.rows())


def test_count_filtered_to_one_person_does_not_tell_their_group(ask, target):
    """1 in the target's group and 0 elsewhere would tell the target's diagnosis: zeros are suppressed too."""
    result = ask(f"SELECT p.diagnosis, COUNT(DISTINCT p.pid) FILTER (WHERE {target['where']}) AS hits "
                 f"{JOIN3} GROUP BY p.diagnosis")
    hits = [row[1] for row in result.rows()]
    assert all(h is None for h in hits), hits


# -- 2. a LEFT JOIN stratum in which one person has a row on the right ---------------------------


def test_left_join_stratum_with_one_matched_person(ask, union_db):
    age, region, sex, persons, matched = first(union_db, """
        SELECT b.age_band, b.region, p.sex, COUNT(*), COUNT(u.pid)
        FROM hospital.patients p JOIN bureau.persons b ON b.pid = p.pid LEFT JOIN hospital.app_usage u ON u.pid = p.pid
        GROUP BY ALL HAVING COUNT(u.pid) = 1 AND COUNT(*) >= 10 ORDER BY ALL LIMIT 1""")
    sessions = first(union_db, f"""
        SELECT u.sessions FROM hospital.patients p JOIN bureau.persons b ON b.pid = p.pid
        JOIN hospital.app_usage u ON u.pid = p.pid
        WHERE b.age_band = '{age}' AND b.region = '{region}' AND p.sex = '{sex}'""")[0]
    result = ask("SELECT b.age_band, b.region, COUNT(*) AS persons, SUM(u.sessions) AS sessions, "
                 "AVG(u.active_weeks) AS weeks, COUNT(DISTINCT u.pid) AS users "
                 "FROM hospital.patients p JOIN bureau.persons b ON b.pid = p.pid "
                 f"LEFT JOIN hospital.app_usage u ON u.pid = p.pid WHERE p.sex = '{sex}' "
                 "GROUP BY b.age_band, b.region")
    cell = next(row for row in result.rows() if row[0] == age and row[1] == region)
    assert cell[2:] == (None, None, None, None), cell          # the stratum itself holds ≥ k persons
    assert_no_small_count(result, 2, 5)
    assert all(row[3] != sessions for row in result.rows() if row[5] is not None and row[5] < K)


# -- 3. a FILTER or CASE on a measure threshold ---------------------------------------------------


def test_threshold_on_a_measure_selects_two_claims(ask, union_db):
    threshold, = first(union_db, "SELECT (cost_eur) FROM insurer.claims WHERE year = 2024 "
                              "ORDER BY cost_eur DESC LIMIT 1 OFFSET 2")
    top = [float(v) for v, in union_db.execute("SELECT cost_eur FROM insurer.claims WHERE year = 2024 "
                                           "ORDER BY cost_eur DESC LIMIT 2").fetchall()]
    t = f"{float(threshold):.2f}"
    result = ask("SELECT b.region, COUNT(*) AS claims, "
                 f"COUNT(*) FILTER (WHERE c.cost_eur > {t}) AS big, "
                 f"SUM(CASE WHEN c.cost_eur > {t} THEN c.cost_eur ELSE 0 END) AS big_cost, "
                 f"SUM(CASE WHEN c.cost_eur > {t} THEN c.cost_eur ELSE 7 END) - 7 * COUNT(*) AS shifted "
                 "FROM insurer.claims c JOIN bureau.persons b ON b.pid = c.pid WHERE c.year = 2024 GROUP BY b.region")
    assert all(row[2] is None for row in result.rows())
    for value in top + [sum(top)]:
        assert_not_released(value, result)


def test_non_linear_functions_of_a_measure_inside_an_aggregate_are_refused(embedded):
    for sql in ["SELECT SUM(GREATEST(c.cost_eur - 30000, 0)) FROM insurer.claims c",
                "SELECT SUM(ROUND(c.cost_eur / 60000)) FROM insurer.claims c"]:
        with pytest.raises(errors.AggregateArgumentPolicyError, match="cannot count"):
            embedded.query(sql)


# -- 4. order statistics --------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT c.category, MAX(c.cost_eur) FROM insurer.claims c GROUP BY c.category",
    "SELECT c.category, COUNT(*) FROM insurer.claims c GROUP BY c.category HAVING MAX(c.cost_eur) > 30000",
])
def test_extremes_of_a_measure_are_refused_with_an_alternative(embedded, sql):
    with pytest.raises(errors.OrderStatisticPolicyError, match="one person's exact value") as err:
        embedded.query(sql)
    assert "AVG(c.cost_eur)" in str(err.value) and err.value.line == 1


def test_min_of_a_dimension_needs_k_persons_at_the_minimum(ask, union_db):
    """The earliest diagnosis year of HF patients per region: released only where ≥ k share it."""
    result = ask("SELECT b.region, COUNT(*) AS n, MIN(p.diagnosis_year) AS first_year "
                 "FROM hospital.patients p JOIN bureau.persons b ON b.pid = p.pid "
                 "WHERE p.diagnosis = 'HF' GROUP BY b.region")
    truth = dict(union_db.execute("""
        SELECT b.region, COUNT(*) FILTER (WHERE p.diagnosis_year = (SELECT MIN(q.diagnosis_year)
            FROM hospital.patients q JOIN bureau.persons r ON r.pid = q.pid WHERE q.diagnosis = 'HF' AND r.region = b.region))
        FROM hospital.patients p JOIN bureau.persons b ON b.pid = p.pid WHERE p.diagnosis = 'HF' GROUP BY b.region
        """).fetchall())
    assert any(n < K for n in truth.values()), truth          # the attack has something to find
    for region, n, first in result.rows():
        if truth[region] < K:
            assert first is None, (region, truth[region])


# -- 5. what the report shows ---------------------------------------------------------------------


def test_leakage_report_does_not_depend_on_how_few_rows_a_filter_leaves(embedded, target, union_db):
    """One patient left after the hospital's filter, or none: the analyst's report is the same."""
    sql = ("SELECT COUNT(*) AS n, SUM(c.cost_eur) AS cost FROM hospital.patients p "
           "JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid WHERE {}")
    empty = next(conds for year in range(2015, 2025)
                 if not first(union_db, sql.format(where(conds := {**target["conds"], "p.diagnosis_year": year})))
                 [0])
    one, none = embedded.query(sql.format(target["where"])), embedded.query(sql.format(where(empty)))
    assert one.suppressed == none.suppressed == [True]
    assert one.leakage == none.leakage
    tokens = [e["count"] for e in one.leakage if e["what"] == "join tokens"]
    assert tokens and min(tokens) >= 3 * 128          # three local results, each padded to ≥ 128 keys


# -- 6. dominance -----------------------------------------------------------------------------------


def test_no_released_sum_is_dominated_by_one_person(ask, union_db):
    """The demo's rule: no person makes up more than 30 % of a released sum."""
    result = ask("SELECT c.category, b.age_band, COUNT(DISTINCT c.pid) AS persons, SUM(c.cost_eur) AS cost "
                 "FROM insurer.claims c JOIN bureau.persons b ON b.pid = c.pid WHERE c.year = 2024 "
                 "AND b.region = 'West' GROUP BY c.category, b.age_band")
    shares = {(category, age): (persons, share) for category, age, persons, share in union_db.execute("""
        SELECT category, age_band, COUNT(*), MAX(s) / SUM(s) FROM (SELECT c.category, b.age_band, c.pid,
        SUM(c.cost_eur) AS s FROM insurer.claims c JOIN bureau.persons b ON b.pid = c.pid
        WHERE c.year = 2024 AND b.region = 'West' GROUP BY ALL) GROUP BY ALL""").fetchall()}
    assert any(n >= K and share > 0.30 for n, share in shares.values()), "a large cell that one person dominates"
    released = [row for row in result.rows() if row[3] is not None]
    assert len(released) >= len(result.rows()) // 2, "large cells still come back"
    for category, age, _, _ in released:
        assert shares[(category, age)][1] <= 0.30, (category, age)


def test_a_dominated_cell_is_suppressed(ask, union_db):
    """A cell of ≥ k persons in which one person carries more than 30 % of the cost."""
    found = first(union_db, """
        SELECT category, region, age_band FROM (SELECT c.category, b.region, b.age_band, c.pid, SUM(c.cost_eur) AS s
        FROM insurer.claims c JOIN bureau.persons b ON b.pid = c.pid WHERE c.year = 2024 GROUP BY ALL)
        GROUP BY ALL HAVING COUNT(*) >= 10 AND MAX(s) > 0.3 * SUM(s) ORDER BY ALL LIMIT 1""")
    assert found is not None, "the demo has a dominated cell"
    category, region, age = found
    result = ask("SELECT b.age_band, COUNT(DISTINCT c.pid) AS persons, SUM(c.cost_eur) AS cost "
                 "FROM insurer.claims c JOIN bureau.persons b ON b.pid = c.pid "
                 f"WHERE c.year = 2024 AND b.region = '{region}' AND c.category = '{category}' "
                 "GROUP BY b.age_band")
    cell = next(row for row in result.rows() if row[0] == age)
    assert cell[1:] == (None, None)


# -- 7. secondary suppression ---------------------------------------------------------------------


def test_total_minus_released_cells_never_isolates_a_small_group(ask):
    by_region = ask("SELECT b.region, COUNT(DISTINCT p.pid) AS patients FROM hospital.patients p "
                    "JOIN bureau.persons b ON b.pid = p.pid WHERE p.diagnosis = 'HF' AND p.diagnosis_year >= 2022 "
                    "GROUP BY b.region")
    total = ask("SELECT COUNT(DISTINCT p.pid) AS patients FROM hospital.patients p "
                "JOIN bureau.persons b ON b.pid = p.pid WHERE p.diagnosis = 'HF' AND p.diagnosis_year >= 2022")
    assert any(by_region.suppressed), "the attack needs a suppressed cell"
    assert not total.suppressed[0]
    hidden = total.rows()[0][0] - sum(row[1] for row in by_region.rows() if row[1] is not None)
    assert hidden >= K, hidden


def test_margins_of_a_two_way_table_do_not_isolate_a_small_group(ask):
    sql = ("SELECT b.age_band, b.region, COUNT(DISTINCT p.pid) AS patients FROM hospital.patients p "
           "JOIN bureau.persons b ON b.pid = p.pid WHERE p.diagnosis = 'HF' GROUP BY b.age_band, b.region")
    grid = ask(sql)
    margin = {row[0]: row[1] for row in ask(
        "SELECT b.age_band, COUNT(DISTINCT p.pid) FROM hospital.patients p JOIN bureau.persons b "
        "ON b.pid = p.pid WHERE p.diagnosis = 'HF' GROUP BY b.age_band").rows()}
    for age, total in margin.items():
        if total is None:
            continue
        cells = [row[2] for row in grid.rows() if row[0] == age]
        if any(c is None for c in cells):
            assert total - sum(c for c in cells if c is not None) >= K, (age, cells, total)


# -- utility ---------------------------------------------------------------------------------------


def test_plain_questions_still_get_answers(ask):
    result = ask(f"SELECT p.diagnosis, COUNT(DISTINCT p.pid) AS patients, AVG(c.cost_eur) AS avg_cost {JOIN3} "
                 "GROUP BY p.diagnosis")
    assert not any(result.suppressed), result.rows()


# -- what the analyst sees of the run ---------------------------------------------------------


def test_the_stage_list_does_not_tell_whether_the_target_matches(embedded, target):
    """The target's own filter against the same filter that nobody meets (a year before the
    domain): both suppressed, and the stages the analyst hears must be the same too — a stage
    skipped when nothing joins would tell that the target exists."""
    heard = {}
    for name, extra in (("target", ""), ("nobody", " AND p.diagnosis_year < 2015")):
        stages = []
        result = embedded.query(f"SELECT c.year, COUNT(*) AS claims FROM hospital.patients p "
                                f"JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid "
                                f"WHERE {target['where']}{extra} GROUP BY c.year", progress=stages.append)
        assert all(v is None for row in result.rows() for v in row[1:]), result.rows()
        heard[name] = [s.partition(" (")[0] for s in stages]
    assert heard["target"] == heard["nobody"], heard
    assert "aggregate" in heard["nobody"]
