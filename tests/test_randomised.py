"""Randomised secure-vs-oracle tests (hypothesis): random data and queries, one 3-party federation.

Each case writes fresh tables for three parties (duplicate and missing keys, NULLs, empty
tables, values at the declared bounds, cells below k), reloads the running parties and
compares the secure result with the plaintext oracle.  Run with a fixed seed in CI.

Some cases run under cell-key perturbation (docs/disclosure.md): the suppression pattern and the
group values must equal the oracle's, each count must lie within the perturbation table's maximum
deviation of the exact one (and not below ``min_released_count``), each sum within the documented
magnitude bound μ·m (m = 2^⌈L/2⌉, L the bit length of the cell's S2, computed here from the data),
and each average between the extremes those two bounds allow.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from compare import assert_same_result
from sqlmpc.catalog import load_federation
from sqlmpc.oracle import run_oracle

pytestmark = [pytest.mark.mpc, pytest.mark.slow]

CASES = 200
PERTURBED_CASES = 30
PIDS = [f"p{i:02d}" for i in range(24)]

FEDERATION = """
[federation]
name = "random"

[policy]
min_cell_size = {k}
{dominance}
{perturbation}

[parties.h]
address = "127.0.0.1:7601"
[parties.h.tables.t]
source = "h/t.parquet"
[parties.h.tables.t.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", max_rows = 14 }}
g   = {{ type = "VARCHAR", role = "dimension", domain = ["a", "b", "c"] }}
x   = {{ type = "INTEGER", role = "measure", range = [-50, 50] }}

[parties.i]
address = "127.0.0.1:7602"
[parties.i.tables.c]
source = "i/c.parquet"
[parties.i.tables.c.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", max_rows = 14 }}
y   = {{ type = "INTEGER", role = "dimension", domain = {{ from = 2020, to = 2022 }} }}
v   = {{ type = "DOUBLE", role = "measure", range = [0, 100], scale = 2 }}
[parties.i.tables.t2]
source = "i/t2.parquet"
[parties.i.tables.t2.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym" }}
g   = {{ type = "VARCHAR", role = "dimension", domain = ["a", "b", "c"] }}
x   = {{ type = "INTEGER", role = "measure", range = [-50, 50] }}

[parties.b]
address = "127.0.0.1:7603"
[parties.b.tables.p]
source = "b/p.parquet"
[parties.b.tables.p.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", unique = true }}
r   = {{ type = "VARCHAR", role = "dimension", domain = ["n", "s"] }}
"""

QUERIES = [
    "SELECT t.g, COUNT(*), SUM(t.x), AVG(t.x) FROM h.t t GROUP BY t.g",
    "SELECT COUNT(*), MIN(t.g), MAX(t.g), SUM(CASE WHEN t.x > {s} THEN t.x ELSE 0 END) FROM h.t t",
    "SELECT p.r, COUNT(*) FILTER (WHERE c.v > {s} + 50), SUM(c.v * 2 + 1) FROM i.c c JOIN b.p p "
    "ON p.pid = c.pid GROUP BY p.r",
    "SELECT p.r, COUNT(DISTINCT t.pid), SUM(c.v), AVG(c.v) FROM h.t t JOIN i.c c ON c.pid = t.pid "
    "LEFT JOIN b.p p ON p.pid = t.pid WHERE c.y >= {y} GROUP BY p.r",
    "SELECT t.g, c.y, COUNT(*), AVG(c.v), VAR_POP(t.x) FROM h.t t JOIN i.c c ON c.pid = t.pid GROUP BY t.g, c.y",
    "SELECT COUNT(*), SUM(c.v) FILTER (WHERE t.x > 0), CORR(t.x, c.v) FROM h.t t JOIN i.c c ON t.pid = c.pid "
    "WHERE t.x + 50 > c.v",
    "SELECT u.g, COUNT(DISTINCT u.pid), SUM(u.x), STDDEV_SAMP(u.x) FROM (SELECT pid, g, x FROM h.t "
    "UNION ALL SELECT pid, g, x FROM i.t2) AS u GROUP BY u.g",
    "SELECT t.g, COUNT(*) AS n, SUM(t.x) AS s FROM h.t t JOIN b.p p ON p.pid = t.pid GROUP BY t.g "
    "HAVING SUM(t.x) > {s} ORDER BY n DESC, t.g",
    "SELECT CASE WHEN p.pid IS NULL THEN 'none' ELSE 'some' END AS known, COUNT(*), REGR_SLOPE(c.v, c.y) "
    "FROM i.c c LEFT JOIN b.p p ON p.pid = c.pid GROUP BY known",
]

DOMINANCE = ["", "dominance = { n = 1, percent = 60 }", 'dominance = { rule = "p-percent", percent = 10 }']

rows_h = st.lists(st.tuples(st.sampled_from(PIDS), st.sampled_from("abc"),
                            st.one_of(st.none(), st.integers(-50, 50), st.sampled_from([-50, 50]))), max_size=14)
rows_c = st.lists(st.tuples(st.sampled_from(PIDS), st.integers(2020, 2022),
                            st.one_of(st.integers(0, 10000).map(lambda c: c / 100), st.sampled_from([0.0, 100.0]))),
                  max_size=14)
rows_p = st.lists(st.tuples(st.sampled_from(PIDS), st.sampled_from("ns")), max_size=14,
                  unique_by=lambda r: r[0])


def write(path, names, types, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(zip(*rows)) if rows else [[] for _ in names]
    pq.write_table(pa.table({n: pa.array(list(c), type=t) for n, c, t in zip(names, cols, types)}), path)


@pytest.fixture(scope="module")
def parties(tmp_path_factory):
    from sqlmpc.party.embedded import EmbeddedFederation

    base = tmp_path_factory.mktemp("random")
    path = setup_case(base / "init", [], [], [], [], 1)
    with EmbeddedFederation(load_federation(path)) as fed:
        yield fed, base


def setup_case(directory, t, c, t2, p, k, dominance="", perturbation=""):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "federation.toml").write_text(FEDERATION.format(k=k, dominance=dominance, perturbation=perturbation))
    s, i = pa.string(), pa.int32()
    write(directory / "h" / "t.parquet", ["pid", "g", "x"], [s, s, i], t)
    write(directory / "i" / "c.parquet", ["pid", "y", "v"], [s, i, pa.float64()], c)
    write(directory / "i" / "t2.parquet", ["pid", "g", "x"], [s, s, i], t2)
    write(directory / "b" / "p.parquet", ["pid", "r"], [s, s], p)
    return directory / "federation.toml"


counter = iter(range(10**9))


@settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(t=rows_h, c=rows_c, t2=rows_h, p=rows_p, k=st.sampled_from([1, 2, 3]), dominance=st.sampled_from(DOMINANCE),
       query=st.sampled_from(QUERIES), y=st.integers(2020, 2023), s=st.integers(-60, 60))
def test_secure_equals_oracle(parties, t, c, t2, p, k, dominance, query, y, s):
    fed_proc, base = parties
    path = setup_case(base / f"case{next(counter)}", t, c, t2, p, k, dominance)
    federation = load_federation(path)
    fed_proc.reload(federation)
    sql = query.format(y=y, s=s)
    assert_same_result(fed_proc.query(sql), run_oracle(sql, federation), sql, rel_tol=1e-8)


# -- under cell-key perturbation ---------------------------------------------------------------

# (query, FROM … of the same rows, the summed expression, its scale): every query groups by its first
# column and selects COUNT(*) AS n, SUM(expr) AS s, AVG(expr) AS a; the sum's persons are the root's pids.
PERTURBED_QUERIES = [
    ("t.g", "FROM h.t t", "t.x", 0),                                            # one table: local mode
    ("p.r", "FROM i.c c JOIN b.p p ON p.pid = c.pid", "c.v", 2),
    ("c.y", "FROM h.t t JOIN i.c c ON c.pid = t.pid", "c.v", 2),
    ("u.g", "FROM (SELECT pid, g, x FROM h.t UNION ALL SELECT pid, g, x FROM i.t2) AS u", "u.x", 0),
]
POLICIES = [(1, 0.5, 0.5), (2, 1.0, 1.0), (3, 2.0, 0.25)]     # max_deviation, variance, magnitude_deviation


def noise_bounds(group: str, source: str, expr: str, scale: int, mu: float, con) -> dict:
    """Per group value: the exact COUNT(*), COUNT(expr), SUM(expr) and the sum's noise bound μ·m."""
    root = source.split()[-1] if "JOIN" not in source else source.split()[2]
    rows = con.execute(f"""
        SELECT g, SUM(n), SUM(k), SUM(s), SUM(c * c) FROM (
            SELECT {group} AS g, {root}.pid, COUNT(*) AS n, COUNT({expr}) AS k, SUM({expr}) AS s,
                   SUM(round({expr} * {10 ** scale})) AS c
            {source} GROUP BY ALL) GROUP BY g""").fetchall()
    out = {}
    for g, n, k, s, s2 in rows:
        s2 = int(s2 or 0)
        m = 1 << -(-s2.bit_length() // 2) if s2 else 0
        out[g] = (n, k, float(s or 0), mu * m / 10 ** scale)
    return out


def within(lo: float, hi: float, value: float) -> bool:
    return lo - 1e-9 * max(1.0, abs(lo)) <= value <= hi + 1e-9 * max(1.0, abs(hi))


@settings(max_examples=PERTURBED_CASES, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate),      # a failing case is printed as found: shrinking MPC runs is slow
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(t=rows_h, c=rows_c, t2=rows_h, p=rows_p, k=st.sampled_from([1, 2, 3]), policy=st.sampled_from(POLICIES),
       query=st.sampled_from(PERTURBED_QUERIES))
def test_perturbed_results_stay_within_the_documented_noise(parties, t, c, t2, p, k, policy, query):
    fed_proc, base = parties
    D, variance, mu = policy
    text = (f'perturbation = "cell_key"\n[policy.cell_key]\nmax_deviation = {D}\nvariance = {variance}\n'
            f'magnitude_deviation = {mu}')
    path = setup_case(base / f"case{next(counter)}", t, c, t2, p, k, perturbation=text)
    federation = load_federation(path)
    fed_proc.reload(federation)
    group, source, expr, scale = query
    sql = f"SELECT {group}, COUNT(*) AS n, SUM({expr}) AS s, AVG({expr}) AS a {source} GROUP BY {group}"
    got, want = fed_proc.query(sql), run_oracle(sql, federation)
    assert got.perturbed == ["n", "s", "a"], sql
    con = duckdb.connect()
    for alias, table in (("h", "t"), ("i", "c"), ("i", "t2"), ("b", "p")):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {alias}")
        con.execute(f"CREATE TABLE {alias}.{table} AS SELECT * FROM '{path.parent / alias / table}.parquet'")
    exact = noise_bounds(group, source, expr, scale, mu, con)
    pairs = sorted(zip(zip(got.rows(), got.suppressed), zip(want.rows(), want.suppressed)), key=lambda x: str(x[1][0][0]))
    assert len(got.rows()) == len(want.rows()), sql
    for (g, g_suppressed), (w, w_suppressed) in pairs:
        context = (sql, policy, g, w)
        assert g_suppressed == w_suppressed and g[0] == w[0], context
        if w_suppressed:
            assert g[1:] == (None, None, None), context
            continue
        n, n_x, s, bound = exact[w[0]]
        assert w[1] == n, context                                                # the oracle is exact
        assert abs(g[1] - n) <= D and g[1] >= federation.policy.cell_key.min_released_count, context
        assert g[2] is not None and abs(float(g[2]) - s) <= bound + 1e-6, context                            # |noise| ≤ μ·m
        if n_x:
            # AVG is the perturbed sum over the perturbed COUNT(expr): between the extremes of the two bounds.
            lows = [(s + e) / (n_x + d) for e in (-bound, bound) for d in (-D, D) if n_x + d > 0]
            if len(lows) == 4 and g[3] is not None:
                assert within(min(lows), max(lows), float(g[3])), context
