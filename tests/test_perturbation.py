"""Cell-key perturbation (docs/disclosure.md): the table, the MPC noise, and differencing attacks.

The attacks run through the real three-party MPC federation on a demo that declares
``perturbation = "cell_key"``; the plaintext oracle gives the exact values the analyst must
not be able to recover.  The federation's record keys are secret, so the noise itself is not
predictable here: the tests assert what the method documents — the same persons give the same
output, one person more or less moves the output by the documented noise, large cells stay
within the documented error, approved plans are exact.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
import secrets
import statistics

import gmpy2
import numpy as np
import pytest

from compare import assert_same_result
from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.demo import generate
from mpc_parties import run_parties
from sqlmpc.oracle import run_oracle
from sqlmpc.plan.compile import compile
from sqlmpc.plan.perturbation import (KEY_RANGE, CellKeyPolicy, PerturbationSpec, Target, magnitude_noise,
                                      perturbation_table)

PERSONS = 2000
D = CellKeyPolicy().max_deviation


# -- the table and the magnitude method (plaintext) -----------------------------------------


@pytest.mark.parametrize("policy", [CellKeyPolicy(), CellKeyPolicy(max_deviation=3, variance=2.0),
                                    CellKeyPolicy(min_released_count=10)])
def test_table_rows_are_unbiased_bounded_and_keep_small_values_out(policy):
    table = perturbation_table(policy, 10)
    for row in table.rows:
        assert abs(row.mean) < 1e-3, row
        assert all(-policy.max_deviation <= row.low + i <= policy.max_deviation
                   for i, p in enumerate(row.probabilities) if p > 0)
        assert row.n + row.low >= policy.min_released_count
        assert row.variance <= policy.variance + 1e-3
    assert abs(table.rows[-1].variance - policy.variance) < 1e-3      # the full row has the variance asked for
    noise = [table.count_noise(10 ** 6, ck) for ck in range(KEY_RANGE)]
    assert abs(statistics.pvariance(noise) - policy.variance) < 1e-3


def test_magnitude_noise_is_bounded_by_the_largest_contribution_scale():
    policy = CellKeyPolicy()
    for s2 in (1, 7, 10 ** 6, 3 * 10 ** 20):
        m = 1 << -(-s2.bit_length() // 2)
        assert math.sqrt(s2) <= m <= 2 * math.sqrt(s2)
        noise = [magnitude_noise(policy, s2, ck) for ck in range(0, KEY_RANGE, 97)]
        assert -m <= min(noise) < -0.99 * m and 0.99 * m - 1 < max(noise) < m      # uniform on [-m, m)
        assert abs(statistics.mean(noise)) < 0.02 * m + 1                       # centred
    assert magnitude_noise(policy, 0, 1234) == 0


# -- the federation file ----------------------------------------------------------------------


def policy_file(tmp_path, text: str):
    path = tmp_path / "federation.toml"
    path.write_text('[federation]\nname = "t"\n\n[policy]\n' + text + '\n\n'
                    + "".join(f'[parties.{p}]\naddress = "127.0.0.1:{7000 + i}"\n\n'
                              for i, p in enumerate(("a", "b", "c"))))
    return path


@pytest.mark.parametrize("text, fragment", [
    ('perturbation = "cell-key"', "did you mean 'cell_key'"),
    ('approved_plans = ["abc"]', "not a plan hash"),
    ('[policy.cell_key]\nmax_deviation = 0', "max_deviation must be between 1 and 64"),
    ('[policy.cell_key]\nvariance = 4.0', "variance must lie strictly between 0 and max_deviation²"),
    ('[policy.cell_key]\nmin_released_count = 11', "cannot exceed min_cell_size"),
    ('[policy.cell_key]\nmagnitude_deviation = 0.3', "magnitude_deviation must be a power of two"),
    ('[policy.cell_key]\nsmallest = 1', "unknown key 'smallest'"),
])
def test_policy_mistakes_are_config_errors(tmp_path, text, fragment):
    with pytest.raises(errors.ConfigError, match=fragment):
        load_federation(policy_file(tmp_path, text))


def test_policy_values_fingerprint_and_local_policy(tmp_path):
    fed = load_federation(policy_file(tmp_path, 'perturbation = "cell_key"\n[policy.cell_key]\nvariance = 1.5'))
    assert fed.policy.perturbation == "cell_key" and fed.policy.cell_key.variance == 1.5
    assert load_federation(policy_file(tmp_path, "")).policy.perturbation == "none"
    # Approving a plan does not change the fingerprint (the plan hash covers it); the table does.
    approved = load_federation(policy_file(tmp_path, f'perturbation = "cell_key"\napproved_plans = ["{"a" * 64}"]'
                                           '\n[policy.cell_key]\nvariance = 1.5'))
    assert approved.fingerprint == fed.fingerprint
    other = load_federation(policy_file(tmp_path, 'perturbation = "cell_key"\n[policy.cell_key]\nvariance = 1.0'))
    assert other.fingerprint != fed.fingerprint
    local = tmp_path / "local.toml"
    local.write_text('[policy]\nperturbation = "none"\n')
    with pytest.raises(errors.ConfigError, match="only be stricter"):
        load_federation(tmp_path / "federation.toml", local_policy=local)


# -- the MPC side: record keys and noise equal their plaintext statements ----------------------------


async def _record_keys_party(mpc, pid, keys, shares):
    from sqlmpc.mpc.prf import token_field
    from sqlmpc.mpc.record_keys import record_keys
    keytype = token_field()
    data = np.array(keys, dtype=object) if pid == 0 else np.zeros(len(keys), dtype=object)
    x = mpc.input(keytype.array(keytype.field.array(data)), senders=0)
    out = await record_keys(x, shares[pid], mpc.SecInt(64))
    return [int(v) for v in await mpc.output(out)], int(keytype.field.modulus)


@pytest.mark.mpc
def test_record_keys_are_the_power_residue_prf_under_the_summed_key():
    from sqlmpc.mpc.prf import _root_index
    keys = [secrets.randbits(64) for _ in range(300)]
    shares = [[secrets.randbits(320) for _ in range(16)] for _ in range(3)]
    got, p = run_parties(_record_keys_party, 3, args=(keys, shares))[0]
    K = sum(s[0] % p for s in shares) % p
    roots = _root_index(p)
    assert [v % KEY_RANGE for v in got] == [roots[int(gmpy2.powmod(K + x, (p - 1) >> 16, p))] for x in keys]
    assert all(0 <= v < 3 * KEY_RANGE for v in got)               # ≡ the key mod 2^16, below (t+2)·2^16
    assert len({v % KEY_RANGE for v in got}) > 250                # 16 bits per person: few collisions


def _spec(policy):
    return PerturbationSpec(policy, perturbation_table(policy, 10),
                            (Target("c", "count", ("k1", "k2")), Target("s", "magnitude", ("k1",), "s2"),
                             Target("t", "magnitude", ("k2",), "s2t")))


async def _perturb_party(mpc, pid, data, policy):
    from sqlmpc.mpc.perturb import perturb_moments
    sectype = mpc.SecInt(200)
    moments = {k: sectype.array(np.array(v, dtype=object)) for k, v in data.items()}
    bounds = {"s2": 2 ** 100, "s2t": 2 ** 41, "k1": 500 * KEY_RANGE, "k2": 500 * KEY_RANGE, "c": 1000,
              "s": 10 ** 12, "t": 10 ** 6}
    out = await perturb_moments(mpc, _spec(policy), moments, bounds)
    return {k: [int(x) for x in await mpc.output(out[k])] for k in ("c", "s", "t")}


@pytest.mark.mpc
@pytest.mark.parametrize("policy", [CellKeyPolicy(), CellKeyPolicy(min_released_count=10, magnitude_deviation=0.5)])
def test_noise_in_mpc_equals_the_documented_functions(policy):
    rng = np.random.default_rng(7)
    G = 16
    data = {"c": [int(v) for v in rng.choice([10, 11, 12, 50, 1000], G)],
            "s": [int(v) for v in rng.integers(-10 ** 12, 10 ** 12, G)],
            "k1": [int(v) for v in rng.integers(0, 500 * KEY_RANGE, G)],
            "k2": [int(v) for v in rng.integers(0, 500 * KEY_RANGE, G)],
            "s2": [0, 1, 5] + [int(v) ** 6 for v in rng.integers(1, 10 ** 5, G - 3)],
            "t": [int(v) for v in rng.integers(-10 ** 6, 10 ** 6, G)],
            "s2t": [0, 2 ** 41 - 1] + [int(v) for v in rng.integers(1, 2 ** 41, G - 2)]}
    got = run_parties(_perturb_party, 3, args=(data, policy))[0]
    table = perturbation_table(policy, 10)
    assert got["c"] == [c + table.count_noise(c, (a + b) % KEY_RANGE)
                        for c, a, b in zip(data["c"], data["k1"], data["k2"])]
    assert got["s"] == [s + magnitude_noise(policy, q, a % KEY_RANGE) for s, a, q in zip(data["s"], data["k1"], data["s2"])]
    assert got["t"] == [t + magnitude_noise(policy, q, b % KEY_RANGE) for t, b, q in zip(data["t"], data["k2"], data["s2t"])]


# -- the perturbed demo through real MPC --------------------------------------------------------------


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory):
    return load_federation(generate(tmp_path_factory.mktemp("perturbed"), persons=PERSONS))


@pytest.fixture(scope="module")
def union(perturbed):
    from sqlmpc.local.data import open_union_database
    return open_union_database(perturbed)


@pytest.fixture(scope="module")
def embedded(perturbed):
    from sqlmpc.party.embedded import EmbeddedFederation
    with EmbeddedFederation(perturbed) as fed:
        yield fed


JOIN = ("FROM hospital.patients p JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid "
        "WHERE c.year = 2024")


def targets(union, diagnosis: str, count: int) -> list[dict]:
    """Persons unique on five dimensions among the 2024 claimants of one diagnosis, and their 2024 cost."""
    rows = union.execute(f"""
        SELECT p.diagnosis_year, p.sex, b.age_band, b.region, any_value(p.pid), SUM(c.cost_eur)
        {JOIN} AND p.diagnosis = '{diagnosis}' GROUP BY ALL HAVING COUNT(DISTINCT p.pid) = 1
        ORDER BY ALL LIMIT {count}""").fetchall()
    out = []
    for year, sex, age, region, pid, cost in rows:
        conds = {"p.diagnosis_year": year, "p.sex": sex, "b.age_band": age, "b.region": region}
        claims = union.execute(f"SELECT COUNT(*) FROM insurer.claims WHERE pid = '{pid}' AND year = 2024").fetchall()[0][0]
        out.append({"conds": conds, "cost": float(cost), "claims": claims})
    return out


def not_and(conds: dict) -> str:
    return "NOT (" + " AND ".join(f"{c} = {v!r}" for c, v in conds.items()) + ")"


def or_of_differences(conds: dict) -> str:
    return "(" + " OR ".join(f"{c} <> {v!r}" for c, v in conds.items()) + ")"


@pytest.mark.mpc
def test_ad_hoc_queries_are_perturbed_and_marked(perturbed):
    plan = compile("SELECT b.region, COUNT(*) FROM bureau.persons b GROUP BY b.region", perturbed)
    assert plan.perturbation is not None and plan.mode == "local"        # the owner still sums per cell
    assert {t.kind for t in plan.perturbation.targets} == {"count"}
    assert {"record keys", "noise bit decompositions"} <= {l.what for l in plan.leakage}


@pytest.mark.mpc
def test_one_table_in_local_mode_gets_the_noise_of_the_same_persons_in_join_mode(embedded, perturbed, union):
    """Local mode sums per cell at the owner, join mode in MPC: the same persons give the same cell keys,
    so the same released values, and both stay within the documented noise of the exact ones."""
    one = ("SELECT c.category, COUNT(*) AS claims, SUM(c.cost_eur) AS cost FROM insurer.claims c "
           "WHERE c.year = 2024 GROUP BY c.category ORDER BY c.category")
    joined = one.replace("FROM insurer.claims c", "FROM insurer.claims c LEFT JOIN bureau.persons b ON b.pid = c.pid")
    assert compile(one, perturbed).mode == "local" and compile(joined, perturbed).mode == "join"
    local, join = embedded.query(one), embedded.query(joined)
    assert local.rows() == join.rows() and local.perturbed == ["claims", "cost"]
    exact = run_oracle(one, perturbed, union).rows()
    assert any(g != w for g, w in zip(local.rows(), exact))
    for g, w in zip(local.rows(), exact):
        assert g[0] == w[0] and abs(g[1] - w[1]) <= D, (g, w)


@pytest.mark.mpc
def test_differencing_by_not_or_and_avg_count_misses_by_the_noise(embedded, union):
    """N vs N−1 persons: the difference of COUNT, SUM and AVG·COUNT is not the person's value.

    The rephrased N−1 query (OR of differences instead of NOT of a conjunction) selects the same
    persons and so gives identical outputs: rephrasing cannot average the noise away.
    """
    select = "SELECT COUNT(*) AS claims, SUM(c.cost_eur) AS cost, AVG(c.cost_eur) AS avg_cost "
    base = f"{select}{JOIN} AND p.diagnosis = 'HF'"
    full = embedded.query(base).rows()[0]
    assert full == embedded.query(base).rows()[0]                          # the same query twice
    count_errors, sum_errors = [], []
    for t in targets(union, "HF", 6):
        fewer = embedded.query(f"{base} AND {not_and(t['conds'])}").rows()[0]
        assert fewer == embedded.query(f"{base} AND {or_of_differences(t['conds'])}").rows()[0]
        count_errors.append(full[0] - fewer[0] - t["claims"])
        sum_errors.append((full[1] - fewer[1] - t["cost"]) / t["cost"])
        by_avg = full[2] * full[0] - fewer[2] * fewer[0]                    # AVG·COUNT = the perturbed sum
        assert math.isclose(by_avg, full[1] - fewer[1], rel_tol=1e-6, abs_tol=1e-3)
    # Counts: the difference of two table draws (variance 2·V); sums: noise of at least the person's
    # contribution's scale (uniform in ±m with m ≥ √S2 ≥ the largest contribution).
    assert any(e != 0 for e in count_errors), count_errors
    assert all(abs(e) <= 2 * D for e in count_errors), count_errors
    assert all(abs(e) > 1e-6 for e in sum_errors), sum_errors
    assert statistics.median(abs(e) for e in sum_errors) > 0.1, sum_errors


@pytest.mark.mpc
def test_total_minus_released_cells_does_not_give_the_suppressed_ones(embedded, union):
    by_age = (f"SELECT b.age_band, COUNT(DISTINCT p.pid) AS patients, SUM(c.cost_eur) AS cost {JOIN} "
              "AND p.diagnosis = 'COPD' GROUP BY b.age_band")
    cells = embedded.query(by_age)
    total = embedded.query(f"SELECT COUNT(DISTINCT p.pid), SUM(c.cost_eur) {JOIN} AND p.diagnosis = 'COPD'").rows()[0]
    exact = {row[0]: row for row in run_oracle(by_age, embedded.federation, union).rows()}
    true_cells = {row[0]: row for row in union.execute(
        f"SELECT b.age_band, COUNT(DISTINCT p.pid), SUM(c.cost_eur) {JOIN} AND p.diagnosis = 'COPD' "
        "GROUP BY b.age_band").fetchall()}
    hidden = [age for age, row in exact.items() if row[1] is None and age in true_cells]
    assert hidden, "the grouping has suppressed cells"
    released = [row for row in cells.rows() if row[1] is not None]
    guess = total[1] - sum(row[2] for row in released)
    assert not math.isclose(guess, sum(float(true_cells[a][2]) for a in hidden), rel_tol=1e-9)


@pytest.mark.mpc
def test_large_cells_stay_within_the_documented_error(embedded, union, perturbed):
    sql = (f"SELECT p.diagnosis, COUNT(DISTINCT p.pid) AS patients, COUNT(*) AS claims, SUM(c.cost_eur) AS cost "
           f"{JOIN} GROUP BY p.diagnosis ORDER BY p.diagnosis")
    got = embedded.query(sql).rows()
    want = run_oracle(sql, perturbed, union).rows()
    s2 = dict(union.execute(f"""SELECT diagnosis, SUM(c * c) FROM (SELECT p.diagnosis, p.pid, SUM(c.cost_eur * 100) AS c
        {JOIN} GROUP BY ALL) GROUP BY ALL""").fetchall())
    mu = perturbed.policy.cell_key.magnitude_deviation
    for g, w in zip(got, want):
        assert g[0] == w[0]
        assert abs(g[1] - w[1]) <= D and abs(g[2] - w[2]) <= D, (g, w)
        bound = 2 * mu * math.sqrt(float(s2[g[0]])) / 100           # μ·m ≤ 2μ√S2 (cents → euros)
        assert abs(g[3] - float(w[3])) <= bound + 0.01, (g, w, bound)
    assert any(g[3] != w[3] for g, w in zip(got, want))                   # the sums are perturbed


@pytest.mark.mpc
def test_approved_saved_query_is_exact(embedded, union, perturbed):
    from pathlib import Path
    sql = (Path(__file__).parent.parent / "queries" / "cost_by_diagnosis_region.sql").read_text()
    assert compile(sql, perturbed).perturbation is None                      # approved in the demo file
    assert_same_result(embedded.query(sql), run_oracle(sql, perturbed, union), sql)


@pytest.mark.mpc
def test_perturbed_columns_are_marked_for_the_analyst(embedded, perturbed):
    from sqlmpc.output import summary, to_markdown
    result = embedded.query("SELECT b.region, COUNT(*) AS persons, MIN(b.age_band) AS youngest "
                            "FROM bureau.persons b GROUP BY b.region")
    assert result.perturbed == ["persons"]                      # MIN of a dimension is released as is
    assert "| region | persons ~ | youngest |" in to_markdown(result)
    assert "~ perturbed" in summary(result)
    exact = embedded.query((Path(__file__).parent.parent / "queries" / "income_gradient.sql").read_text())
    assert exact.perturbed == [] and "perturbed" not in summary(exact)


@pytest.mark.mpc
def test_rephrased_equivalents_give_identical_outputs(embedded):
    """The same persons give the same noise, whatever the wording or the order of the select list."""
    a = embedded.query(f"SELECT b.region, COUNT(*) AS claims, SUM(c.cost_eur) AS cost, AVG(c.cost_eur) AS avg {JOIN} "
                       "AND p.diagnosis IN ('HF', 'CKD') GROUP BY b.region ORDER BY b.region").rows()
    b = embedded.query("SELECT AVG(cc.cost_eur) AS avg, SUM(cc.cost_eur) AS cost, bb.region, COUNT(*) AS claims "
                       "FROM hospital.patients pp JOIN bureau.persons bb ON bb.pid = pp.pid "
                       "JOIN insurer.claims cc ON pp.pid = cc.pid "
                       "WHERE (pp.diagnosis = 'CKD' OR pp.diagnosis = 'HF') AND cc.year = 2024 "
                       "GROUP BY bb.region ORDER BY bb.region").rows()
    assert a == [(r[2], r[3], r[1], r[0]) for r in b]


def test_each_party_checks_approvals_itself(perturbed, tmp_path):
    """A party whose local policy approves fewer plans plans the query perturbed: the hashes differ,
    so the parties refuse to run it together rather than release it exactly."""
    sql = (Path(__file__).parent.parent / "queries" / "income_gradient.sql").read_text()
    local = tmp_path / "local.toml"
    local.write_text("[policy]\napproved_plans = []\n")
    strict = load_federation(perturbed.path, local_policy=local)
    exact, noisy = compile(sql, perturbed), compile(sql, strict)
    assert exact.perturbation is None and noisy.perturbation is not None
    assert exact.digest != noisy.digest
    from sqlmpc.cli.approve import approvals
    assert exact.digest in approvals(Path(__file__).parent.parent / "queries" / "income_gradient.sql", strict)


def test_record_key_share_persists_and_rotates(tmp_path, capsys):
    from sqlmpc.cli.main import main
    from sqlmpc.mpc.record_keys import load_share, party_state
    fed = load_federation(policy_file(tmp_path, 'perturbation = "cell_key"'))
    state = party_state(fed.path, "a")
    first = load_share(state)
    assert load_share(state) == first                              # kept across restarts
    assert main(["keys", "rotate-record-key", "--federation", str(fed.path)]) == 0
    assert "every person's record key" in capsys.readouterr().out
    assert load_share(state) != first
    assert oct(share_mode(state))[-3:] == "600"


def share_mode(state):
    from sqlmpc.mpc.record_keys import share_path
    return share_path(state).stat().st_mode


@pytest.mark.mpc
def test_dbapi_cursor_names_the_perturbed_columns(embedded, perturbed):
    from sqlmpc.dbapi import Connection
    cursor = Connection(embedded).cursor()          # the module's federation, not closed here
    cursor.execute("SELECT b.region, COUNT(*) AS persons FROM bureau.persons b GROUP BY b.region")
    regions = perturbed.table("bureau", "persons").column("region").domain
    assert cursor.perturbed == ["persons"] and len(cursor.fetchall()) == len(regions)
    cursor.execute("SELECT b.region FROM bureau.persons b GROUP BY b.region")
    assert cursor.perturbed == []                   # no aggregate, nothing perturbed


def test_csv_json_and_arrow_outputs_mark_the_perturbed_columns():
    """Files for programs say which values carry noise: ``_perturbed`` per row (none on a suppressed row)."""
    import csv
    import io
    import json

    import pyarrow as pa

    from sqlmpc.output import to_csv, to_json, with_suppressed
    from sqlmpc.plan.perturbation import PERTURBED_KEY
    from sqlmpc.result import Result
    table = pa.table({"region": ["North", "South"], "persons": [31, None], "cost": [1200.5, None],
                      "youngest": ["18-34", None]})
    noisy = Result(table.replace_schema_metadata({PERTURBED_KEY: json.dumps(["persons", "cost"]).encode()}),
                   [False, True], min_cell_size=10)
    rows = list(csv.DictReader(io.StringIO(to_csv(noisy))))
    assert [r["_perturbed"] for r in rows] == ["persons;cost", ""]
    assert [r["_suppressed"] for r in rows] == ["false", "true"]
    assert [r["_perturbed"] for r in json.loads(to_json(noisy))] == [["persons", "cost"], []]
    assert with_suppressed(noisy, perturbed_column=True).column("_perturbed").to_pylist() == [["persons", "cost"], []]
    exact = Result(table, [False, True], min_cell_size=10)
    assert "_perturbed" not in to_csv(exact) and "_perturbed" not in to_json(exact)
    assert "_perturbed" not in with_suppressed(exact, perturbed_column=True).column_names
    assert "_perturbed" not in with_suppressed(noisy).column_names      # the PostgreSQL wire's table as before


@pytest.mark.mpc
def test_union_of_three_owners_stays_in_local_mode_within_the_noise(tmp_path):
    """UNION ALL of tables with their own key spaces: each owner sums its cells, MPC adds every part's
    cell keys; counts within D of the exact ones, sums within the documented bound μ·m."""
    from sqlmpc.demo import generate_horizontal
    from sqlmpc.party.embedded import EmbeddedFederation
    path = generate_horizontal(tmp_path, rows_per_party=300)
    path.write_text(path.read_text().replace("[policy]", '[policy]\nperturbation = "cell_key"', 1))
    fed = load_federation(path)
    branches = " UNION ALL ".join(f"SELECT pid, ward, cost_eur FROM {p}.admissions" for p in fed.party_names)
    sql = f"SELECT u.ward, COUNT(*) AS n, SUM(u.cost_eur) AS s FROM ({branches}) u GROUP BY u.ward ORDER BY u.ward"
    plan = compile(sql, fed)
    assert plan.mode == "local" and plan.perturbation is not None and len(plan.parts) == 3
    with EmbeddedFederation(fed) as embedded:
        got = embedded.query(sql).rows()
    exact = run_oracle(sql, fed).rows()
    from sqlmpc.local.data import open_union_database
    s2 = dict(open_union_database(fed).execute(
        f"SELECT ward, SUM(c * c) FROM (SELECT ward, pid, SUM(round(cost_eur * 100)) AS c FROM ({branches}) "
        "GROUP BY ALL) GROUP BY ward").fetchall())
    assert any(g != w for g, w in zip(got, exact))
    for g, w in zip(got, exact):
        m = 1 << -(-int(s2[w[0]]).bit_length() // 2)
        assert g[0] == w[0] and abs(g[1] - w[1]) <= D and abs(g[2] - w[2]) <= m / 100, (g, w, m)


# -- rescaling: several noisy looks at one cell (sqlmpc/plan/canonical.py) -------------------------

FACTORS = (1, 3, 5, 7)


def denoise(releases: dict[int, float]) -> float:
    """The analyst's linear algebra on R_k = k·S + v·m_k, where one cell's noise draw v is shared by
    every rescaling and m_k is a power of two: m_k / m_1 = r_k is one of a few ratios, so for each
    guess of them R_k − k·R_1 = w·(r_k − k) with w = v·m_1; the guess that fits best gives S = R_1 − w."""
    best = None
    ratios = {k: [2 ** e for e in range(0, 5)] for k in FACTORS[1:]}
    for guess in itertools.product(*ratios.values()):
        xs = [r - k for r, k in zip(guess, FACTORS[1:])]
        ys = [releases[k] - k * releases[1] for k in FACTORS[1:]]
        if not any(xs):
            continue
        w = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
        residual = sum((y - w * x) ** 2 for x, y in zip(xs, ys))
        if best is None or residual < best[0]:
            best = (residual, releases[1] - w)
    return best[1]


def rescaled(argument: str) -> str:
    return ", ".join(f"SUM({k} * {argument}) AS r{k}" for k in FACTORS)


@pytest.mark.mpc
@pytest.mark.parametrize("argument, exact", [
    ("c.cost_eur", "SUM(c.cost_eur)"),
    ("1", "COUNT(*)"),
])
def test_rescaled_sums_and_counts_give_one_look_only(embedded, union, argument, exact):
    """SUM(1·x), SUM(3·x), SUM(5·x), SUM(7·x) (and SUM(k) for a count) are released as k times one
    perturbed base value, so the linear system that would cancel the noise has nothing to solve:
    the analyst's estimate is the perturbed value itself, in every cell."""
    group = f"{JOIN} GROUP BY p.diagnosis ORDER BY p.diagnosis"
    rows = embedded.query(f"SELECT p.diagnosis, {rescaled(argument)} {group}").rows()
    truth = dict(union.execute(f"SELECT p.diagnosis, {exact} {group}").fetchall())
    missed = []
    for diagnosis, *values in rows:
        releases = dict(zip(FACTORS, (float(v) for v in values)))
        for k in FACTORS:
            assert math.isclose(releases[k], k * releases[1], rel_tol=1e-12), releases
        estimate = denoise(releases)
        assert math.isclose(estimate, releases[1], rel_tol=1e-12), (releases, estimate)
        missed.append(not math.isclose(estimate, float(truth[diagnosis]), rel_tol=1e-9, abs_tol=1e-6))
    # Sums carry noise in every cell; a count's noise is 0 with probability 0.38, so in some cells.
    assert all(missed) if argument != "1" else any(missed), (rows, truth)


@pytest.mark.mpc
def test_rescaling_through_union_all_and_linear_combinations_add_nothing(embedded):
    horizontal = ("FROM (SELECT pid, year, drug_class, ddd FROM hospital.medication UNION ALL "
                  "SELECT pid, year, drug_class, ddd FROM insurer.pharmacy) AS m WHERE m.year = 2024")
    row = embedded.query(f"SELECT {rescaled('m.ddd')}, SUM(m.ddd / 4 + 2) AS shifted, COUNT(m.ddd) AS n "
                         f"{horizontal}").rows()[0]
    r1 = float(row[0])
    assert all(math.isclose(float(v), k * r1, rel_tol=1e-12) for k, v in zip(FACTORS, row)), row
    assert math.isclose(float(row[4]), r1 / 4 + 2 * float(row[5]), rel_tol=1e-12), row
    # A sum of terms is the sum of the terms' releases; a CASE, its arms' (as FILTERs) weighted.
    both = embedded.query("SELECT SUM(u.sessions + u.active_weeks) AS s, SUM(u.sessions) AS a, "
                          "SUM(u.active_weeks) AS b, SUM(CASE WHEN u.sessions > 100 THEN 2 * u.sessions "
                          "ELSE u.sessions END) AS c, SUM(u.sessions) FILTER (WHERE u.sessions > 100) AS d, "
                          "SUM(u.sessions) FILTER (WHERE NOT (u.sessions > 100)) AS e "
                          "FROM hospital.app_usage u").rows()[0]
    s, a, b, c, d, e = (float(v) for v in both)
    assert math.isclose(s, a + b, rel_tol=1e-12) and math.isclose(c, 2 * d + e, rel_tol=1e-12), both


# -- partial removal: some of one person's rows, the person kept in the cell ----------------------


@pytest.mark.mpc
def test_removing_some_of_a_persons_rows_gives_fresh_noise(embedded, union):
    """A target stays in the HF cell (claims of other years) while the second query drops only their
    2024 claims: the persons are the same, but the rows are not, so the cell keys differ and the
    differences of COUNT(*) and SUM miss the target's 2024 claims and cost."""
    base = ("SELECT COUNT(*) AS claims, SUM(c.cost_eur) AS cost FROM hospital.patients p "
            "JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid "
            "WHERE p.diagnosis = 'HF'")
    full = embedded.query(base).rows()[0]
    count_hits, cost_hits = [], []
    for t in targets(union, "HF", 6):
        conds = " AND ".join(f"{c} = {v!r}" for c, v in t["conds"].items())
        fewer = embedded.query(f"{base} AND NOT ({conds} AND c.year = 2024)").rows()[0]
        count_hits.append(full[0] - fewer[0] == t["claims"])
        cost_hits.append(math.isclose(float(full[1]) - float(fewer[1]), t["cost"], rel_tol=1e-9, abs_tol=1e-6))
    assert not any(cost_hits), cost_hits
    assert not all(count_hits), count_hits
