"""The oracle equals hand-written DuckDB SQL over the union of the data, suppression included."""

from __future__ import annotations

import pytest

from compare import same
from sqlmpc.oracle import run_oracle


def test_cost_by_region_matches_handwritten_sql(federation, union_db):
    k = federation.policy.min_cell_size
    got = run_oracle("SELECT b.region, COUNT(DISTINCT c.pid) AS n, AVG(c.cost_eur) AS avg_cost "
                     "FROM insurer.claims c JOIN bureau.persons b ON b.pid = c.pid "
                     "WHERE c.year = 2024 GROUP BY b.region ORDER BY b.region", federation, union_db)
    want = union_db.execute(f"""
        SELECT b.region, COUNT(DISTINCT c.pid) AS n, AVG(c.cost_eur)
        FROM insurer.claims c JOIN bureau.persons b ON b.pid = c.pid
        WHERE c.year = 2024 GROUP BY b.region HAVING COUNT(DISTINCT c.pid) >= {k} ORDER BY b.region""").fetchall()
    rows = [r for r, s in zip(got.rows(), got.suppressed) if not s]
    assert len(rows) == len(want) > 0
    for r, w in zip(rows, want):
        assert all(same(a, b) for a, b in zip(r, w))


def test_small_cells_are_suppressed_exactly_below_k(federation, union_db):
    k = federation.policy.min_cell_size
    got = run_oracle("SELECT b.age_band, b.region, COUNT(DISTINCT p.pid) AS n "
                     "FROM hospital.patients p JOIN bureau.persons b ON b.pid = p.pid "
                     "WHERE p.diagnosis = 'HF' GROUP BY b.age_band, b.region", federation, union_db)
    counts = dict(((a, d), n) for a, d, n in union_db.execute(
        "SELECT b.age_band, b.region, COUNT(DISTINCT p.pid) FROM hospital.patients p "
        "JOIN bureau.persons b ON b.pid = p.pid WHERE p.diagnosis = 'HF' GROUP BY ALL").fetchall())
    assert any(s for s in got.suppressed) and not all(got.suppressed)
    assert len(got.rows()) == 6 * 4                     # the whole public grid
    for (band, region, n), suppressed in zip(got.rows(), got.suppressed):
        true_n = counts.get((band, region), 0)
        assert suppressed == (true_n < k)
        assert n == (None if true_n < k else true_n)


def test_having_order_and_limit(federation, union_db):
    got = run_oracle("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region "
                     "HAVING COUNT(*) > 0 ORDER BY n DESC LIMIT 2", federation, union_db)
    want = union_db.execute("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region "
                            "ORDER BY n DESC LIMIT 2").fetchall()
    assert got.rows() == [tuple(r) for r in want]


REFUSED_BY_THE_PLANNER = [
    "SELECT c.category, ROUND(AVG(c.cost_eur), 2) AS v FROM insurer.claims c GROUP BY 1",
    "SELECT COVAR_SAMP(c.cost_eur + u.sessions, c.cost_eur) AS v FROM insurer.claims c "
    "JOIN hospital.app_usage u ON u.pid = c.pid",
    "SELECT COUNT(*) AS n FROM insurer.claims c JOIN hospital.app_usage u ON u.pid = c.pid "
    "WHERE ABS(c.cost_eur - u.sessions) > 2",
    "SELECT c.category, REGR_SLOPE(c.cost_eur, c.year) * 100 AS v FROM insurer.claims c GROUP BY 1",
    "SELECT c.category, COUNT(*) AS n FROM insurer.claims c GROUP BY 1 HAVING COUNT(*) BETWEEN 1 AND 5",
    "SELECT COUNT(*) AS n FROM insurer.claims c JOIN hospital.app_usage u ON u.pid = c.pid "
    "WHERE c.cost_eur / u.sessions > 2",
]


def test_the_dry_run_refuses_what_the_federation_refuses(demo_path):
    """Was: the dry run (connect(..., oracle=True), --oracle) bound the query and ran it, skipping the
    planner, so it answered queries the federation refuses (functions over aggregates, expressions
    across parties the secure engine cannot compute, ...).  It compiles first now, as the coordinator
    and every party do, and fails with the federation's own error class."""
    import sqlmpc
    from sqlmpc import errors

    with sqlmpc.connect(demo_path) as federation, sqlmpc.connect(demo_path, oracle=True) as dry_run:
        for sql in REFUSED_BY_THE_PLANNER:
            with pytest.raises(errors.Error) as refused:
                federation.execute(sql)
            assert isinstance(refused.value, errors.ProgrammingError), sql
            with pytest.raises(type(refused.value)) as dry:
                dry_run.execute(sql)
            assert type(dry.value) is type(refused.value) and str(dry.value) == str(refused.value), sql
        sql = "SELECT c.category, COUNT(*) AS n FROM insurer.claims c GROUP BY 1 ORDER BY 1"
        assert dry_run.execute(sql).fetchall() == federation.execute(sql).fetchall()
