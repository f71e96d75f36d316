"""Randomised secure-vs-oracle tests (hypothesis): random data and queries, one 3-party federation.

Each case writes fresh tables for three parties (duplicate and missing keys, NULLs, empty
tables, values at the declared bounds, cells below k), reloads the running parties and
compares the secure result with the plaintext oracle.  Run with a fixed seed in CI.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from compare import assert_same_result
from sqlmpc.catalog import load_federation
from sqlmpc.oracle import run_oracle

pytestmark = [pytest.mark.mpc, pytest.mark.slow]

CASES = 200
PIDS = [f"p{i:02d}" for i in range(24)]

FEDERATION = """
[federation]
name = "random"

[policy]
min_cell_size = {k}
{dominance}

[parties.h]
address = "127.0.0.1:7601"
[parties.h.tables.t]
source = "h/t.parquet"
[parties.h.tables.t.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym" }}
g   = {{ type = "VARCHAR", role = "dimension", domain = ["a", "b", "c"] }}
x   = {{ type = "INTEGER", role = "measure", range = [-50, 50] }}

[parties.i]
address = "127.0.0.1:7602"
[parties.i.tables.c]
source = "i/c.parquet"
[parties.i.tables.c.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym" }}
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


def setup_case(directory, t, c, t2, p, k, dominance=""):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "federation.toml").write_text(FEDERATION.format(k=k, dominance=dominance))
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
