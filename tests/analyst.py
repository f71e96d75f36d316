"""Differential testing with the SQL analysts write: the demo federation's tables, joined as an
analyst joins them, against plain DuckDB on the raw tables.

tests/differential.py generates queries over small random worlds; it ran 3,000 of them without a
failure, while an independent generator over the demo tables found wrong numbers in 300
(tests/test_silent_wrong_numbers.py).  This generator writes what that one wrote, on purpose:

* an expression of one or of several columns (of one party or across parties) inside every
  aggregate — SUM, AVG, COUNT(x), VAR/STDDEV, CORR/COVAR/REGR — such as ``x + 1``, ``x - y``,
  ``x * 2 - 1``, ``x * y``, ``x / 2``;
* CASE with and without ELSE (``CASE WHEN cond THEN x END``), ``THEN NULL`` branches, COALESCE of
  them: NULL-producing expressions inside aggregates;
* INNER and LEFT JOINs of 1-4 of the demo's tables (1:1 and 1:n; not two tables of several rows
  per person, whose n × m rows per person take minutes in MPC), GROUP BY a binning of a
  LEFT-joined measure (WIDTH_BUCKET, CASE bins with and without ELSE and with a NULL branch);
* WHERE that narrows a dimension of a non-root party (``=``, ``IN``, ``BETWEEN``, ``<>``), often
  on a dimension that is also grouped by (down to one value), and comparisons across parties;
* FILTER and CASE conditions across parties; dimensions of several parties in GROUP BY; HAVING
  and ORDER BY over them; ``?`` parameters in WHERE, FILTER and HAVING.

The expectation is independent of sqlmpc's oracle and planner: each query is kept as a
:class:`differential.Query` tree that renders both in the dialect and as plain DuckDB SQL, and
:func:`differential.expected` computes the result from one DuckDB GROUP BY over the raw Parquet
tables (read here with ``read_parquet``, not through sqlmpc) plus the release rules of
docs/secure-execution.md §3 as differential.py re-implements them (k persons per contributor
set, zero counts suppressed, MIN/MAX of a dimension, secondary suppression along the grid's
lines, HAVING on released cells).  **Dominance is not re-implemented**: the tested copy of the
demo federation declares none (its ``[policy.dominance]`` is removed; tests/test_randomised.py
compares dominance with the oracle).  Exact release (``perturbation = "none"``).

Every answered query is compared cell by cell, suppression flags included, for the oracle and —
for a share of the queries (``secure``) — for the secure engine in one embedded 3-party
federation that stays up for the whole run.  A refused query is classified by its error class
(a ProgrammingError subclass before any party works).  Anything else is a failure: a
*mismatch* (a number or a suppression flag differs from plain DuckDB) or a *crash* (an
exception that is not a refusal).

    python bench/analyst.py --n 10000 --persons 5000 --secure-share 0.05
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

import differential as d
from differential import (Group, Item, Query, Source, Verdict, agg, arith, case, coalesce, column, lit, neg, node,
                          param, width_bucket)
from sqlmpc.catalog import load_federation
from sqlmpc.demo.generate import DEMO_SCHEMA, generate
from sqlmpc.local.data import open_union_database

# ------------------------------------------------------------------ the demo catalog, the generator's own copy

TABLES = {(party, name): tuple(d.Col(c.name, c.type, c.role.value if hasattr(c.role, "value") else str(c.role),
                                     tuple(c.domain or ()), tuple(c.range or ()), bool(c.nullable))
                               for c in columns)
          for party, tables in DEMO_SCHEMA.items() for name, columns in tables.items()}
KEY = d.Col("pid", "VARCHAR", "key", nullable=False)
MANY = {("insurer", "claims"), ("insurer", "pharmacy"), ("hospital", "medication")}     # several rows per person


@dataclass(frozen=True)
class DemoSource(Source):
    @property
    def cols(self) -> tuple:
        return TABLES[(self.party, self.table)]


def make_world(directory: Path, persons: int = 2000, k: int = 10) -> d.World:
    """The demo federation at ``persons``, exact release, no dominance rule; raw tables in plain DuckDB."""
    path = generate(directory, persons=persons, min_cell_size=k, perturbation="none")
    text = path.read_text()
    text = re.sub(r"\n\[policy\.dominance\]\n(?:[a-z_]+ = [^\n]*\n)+", "\n", text)
    assert "dominance" not in text
    path.write_text(text)
    con = duckdb.connect()
    for (party, table) in TABLES:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {party}")
        con.execute(f"CREATE TABLE {party}.{table} AS SELECT * FROM read_parquet('{directory / party / table}.parquet')")
    return d.World(path, k, {}, con)


# ------------------------------------------------------------------ the generator

MEASURE_CONSTANTS = {"sessions": (50, 100, 250), "active_weeks": (4, 10, 26), "cost_eur": (100, 1000, 5000),
                     "ddd": (10, 100, 500)}
AGG_1 = ["SUM", "AVG", "VAR_POP", "VAR_SAMP", "STDDEV_POP", "STDDEV_SAMP", "STDDEV", "VARIANCE"]
AGG_2 = ["CORR", "COVAR_POP", "COVAR_SAMP", "REGR_SLOPE", "REGR_INTERCEPT", "REGR_R2"]


class AnalystGenerator(d.Generator):
    """Queries as an analyst writes them over the demo tables (seeded)."""

    # -- FROM: the root and 0-3 joined tables, INNER or LEFT

    def sources(self) -> tuple:
        rng = self.rng
        tables = list(TABLES)
        first = rng.choice(tables)
        rest = [t for t in tables if t != first]
        n = rng.choices([0, 1, 2, 3], [0.15, 0.4, 0.3, 0.15])[0]
        chosen = rng.sample(rest, n)
        if first in MANY:                # at most one table of many rows per person: two of them join
            chosen = [t for t in chosen if t not in MANY]      # n × m rows per person (minutes in MPC)
        else:
            chosen = [t for t in chosen if t not in MANY] + [t for t in chosen if t in MANY][:1]
        if not any(c.role == "measure" for t in [first] + chosen for c in TABLES[t]):
            chosen.append(rng.choice([t for t in rest if t not in chosen and any(c.role == "measure" for c in TABLES[t])]))
        return (DemoSource("t0", *first),) + tuple(
            DemoSource(f"t{i + 1}", p, t, join=rng.choice(["JOIN", "LEFT JOIN", "LEFT JOIN", "INNER JOIN"]))
            for i, (p, t) in enumerate(chosen))

    def const(self, c: d.Col):
        if c.name in MEASURE_CONSTANTS:
            return self.rng.choice(MEASURE_CONSTANTS[c.name])
        return self.rng.choice(c.domain)

    def lit_or_param(self, value, p: float = 0.15) -> d.E:
        return param(value) if self.chance(p) else lit(value)

    # -- conditions (WHERE, FILTER, CASE WHEN)

    def dim_condition(self, s, c, narrow: bool = False) -> d.E:
        rng = self.rng
        x = self.col(s, c)
        values = list(c.domain)
        a = self.lit_or_param(rng.choice(values))
        forms = [lambda: node("{} = {}", x, a), lambda: node("{} <> {}", x, a),
                 lambda: node("{} IN ({}, {})", x, a, lit(rng.choice(values)))]
        if c.type == "INTEGER":
            lo, hi = sorted(rng.sample(values, 2)) if len(values) > 1 else (values[0], values[0])
            forms += [lambda: node("{} BETWEEN {} AND {}", x, lit(lo), lit(hi)), lambda: node("{} >= {}", x, a),
                      lambda: node("{} < {}", x, a)]
        else:
            forms += [lambda: node("{} NOT IN ({}, {})", x, a, lit(rng.choice(values)))]
        if narrow:
            return forms[0]() if self.chance(0.5) else rng.choice(forms)()
        return rng.choice(forms)()

    def measure_condition(self, s, c) -> d.E:
        x = self.col(s, c)
        a = self.lit_or_param(self.const(c))
        return self.rng.choice([lambda: node("{} > {}", x, a), lambda: node("{} <= {}", x, a),
                                lambda: node("{} BETWEEN {} AND {}", x, lit(0), a),
                                lambda: node("{} IS NOT NULL", x), lambda: node("{} IS NULL", x)])()

    def cross_condition(self, sources) -> d.E | None:
        """A comparison of two parties' columns (years against years, a measure against a measure)."""
        rng = self.rng
        years = [(s, c) for s, c in self.columns(sources, "dimension") if c.type == "INTEGER"]
        measures = self.columns(sources, "measure")
        pairs = [(a, b) for a in years for b in years if a[0].party != b[0].party and a[0].alias < b[0].alias]
        pairs += [(a, b) for a in measures for b in measures if a[0].party != b[0].party and a[0].alias < b[0].alias]
        if not pairs:
            return None
        (s1, c1), (s2, c2) = rng.choice(pairs)
        x, y = self.col(s1, c1), self.col(s2, c2)
        op = rng.choice([">=", ">", "<", "<=", "=", "<>"])
        if c1.role == "measure" and self.chance(0.5):
            return node("{} " + op + " {} * {}", x, y, lit(rng.choice([1, 2, 10])))
        return node("{} " + op + " {}", x, y)

    def condition(self, sources, cross: float = 0.25) -> d.E:
        rng = self.rng
        if self.chance(cross):
            e = self.cross_condition(sources)
            if e is not None:
                return e
        r = rng.random()
        dims, measures = self.columns(sources, "dimension"), self.columns(sources, "measure")
        if r < 0.55 and dims:
            return self.dim_condition(*rng.choice(dims))
        if measures:
            return self.measure_condition(*rng.choice(measures))
        return self.dim_condition(*rng.choice(dims))

    # -- aggregate arguments: expressions of one and of several columns, NULL-producing

    def argument(self, sources, depth: int = 0) -> d.E:
        rng = self.rng
        measures = self.columns(sources, "measure")
        s, c = rng.choice(measures)
        m = self.col(s, c)
        other = self.col(*rng.choice(measures))
        k = lit(rng.choice([1, 2, 7, 100]))
        r = rng.random()
        if r < 0.2 or depth > 1:
            return m
        if r < 0.3:
            return arith(rng.choice("+-"), m, k) if self.chance(0.7) else arith("+", lit(1), m)
        if r < 0.36:
            return arith("-", arith("*", m, lit(2)), lit(1))
        if r < 0.4:
            return arith("/", m, lit(rng.choice([2, 4])))
        if r < 0.5:
            return arith(rng.choice("+-"), m, other)
        if r < 0.55:
            return arith("*", m, other)
        if r < 0.72:                                     # CASE without ELSE: NULL where not taken
            then = self.argument(sources, depth + 1)
            return case([(self.condition(sources, 0.3), then)], None)
        if r < 0.82:                                     # CASE with ELSE
            then = self.argument(sources, depth + 1)
            return case([(self.condition(sources, 0.3), then)], rng.choice([lit(0), other, lit(None), k]))
        if r < 0.88:                                     # THEN NULL ELSE x
            return case([(self.condition(sources, 0.3), lit(None))], self.argument(sources, depth + 1))
        if r < 0.94:
            inner = case([(self.condition(sources, 0.3), m)], None)
            return coalesce(inner, lit(0)) if self.chance(0.5) else arith("+", inner, lit(1))
        return neg(m)

    def aggregate(self, sources) -> d.AggE:
        rng = self.rng
        filt = self.condition(sources, 0.4) if self.chance(0.25) else None
        r = rng.random()
        if r < 0.12:
            return agg("COUNT", filter=filt)
        if r < 0.25:
            return agg("COUNT", self.argument(sources), filter=filt)
        if r < 0.3:
            return agg("COUNT", column(rng.choice(sources).alias, KEY), filter=filt, distinct=True)
        if r < 0.33 and self.columns(sources, "dimension"):
            s, c = rng.choice(self.columns(sources, "dimension"))
            return agg(rng.choice(["MIN", "MAX"]), self.col(s, c), filter=filt)
        if r < 0.85:
            return agg(rng.choice(AGG_1), self.argument(sources), filter=filt)
        return agg(rng.choice(AGG_2), self.argument(sources), self.argument(sources), filter=filt)

    def output(self, sources) -> d.E:
        a = self.aggregate(sources)
        if self.chance(0.8):
            return a
        a, b = (agg(self.rng.choice(["SUM", "AVG", "COUNT"]), self.argument(sources)) for _ in range(2))
        return self.rng.choice([lambda: arith("-", a, b), lambda: arith("/", a, agg("COUNT")),
                                lambda: arith("*", a, lit(100)), lambda: arith("+", a, b)])()

    # -- GROUP BY: several parties' dimensions, binnings of (LEFT-joined) measures

    def group(self, sources) -> Group:
        rng = self.rng
        ref = rng.choice(["expr", "expr", "alias", "position"])
        left = [s for s in sources if s.nullable]
        if self.chance(0.7) and self.columns(sources, "dimension"):
            dims = self.columns(sources, "dimension")
            if left and self.chance(0.4):
                dims = [(s, c) for s, c in dims if s.nullable] or dims
            s, c = rng.choice(dims)
            return Group(self.col(s, c), ref)
        measures = self.columns(sources, "measure")
        if left and self.chance(0.6):
            measures = [(s, c) for s, c in measures if s.nullable] or measures
        s, c = rng.choice(measures)
        x = self.col(s, c)
        lo, hi = c.range
        if self.chance(0.5):
            n = rng.randint(1, 6)
            top = rng.choice([hi, hi // 2, hi // 10 or 1])
            return Group(width_bucket(x, lo, top, n), ref, ("NULL?",) + tuple(range(n + 2)), (s.alias, c))
        cuts = sorted(rng.sample(MEASURE_CONSTANTS[c.name], rng.randint(1, 2)))
        labels = ["low", "mid"][:len(cuts)]
        branches = [(node("{} < {}", x, lit(cut)), lit(label)) for cut, label in zip(cuts, labels)]
        if s.nullable and self.chance(0.4):              # reachable only where a LEFT JOIN has no match
            branches.insert(0, (node("{} IS NULL", x), lit("none")))
        default = "high" if self.chance(0.6) else None
        bins = tuple(dict.fromkeys([t.fmt.strip("'") for _, t in branches] + [default]))
        return Group(case(branches, lit(default) if default else None), ref, bins, (s.alias, c))

    # -- a whole query

    def query(self) -> Query:
        rng = self.rng
        sources = self.sources()
        groups: list[Group] = []
        for _ in range(rng.choices([0, 1, 2, 3], [0.15, 0.4, 0.35, 0.1])[0]):
            g = self.group(sources)
            if g.expr.sql() not in [h.expr.sql() for h in groups]:
                groups.append(g)
        items = [Item(g.expr, rng.choice([None, f"g{i}"]), group=i) for i, g in enumerate(groups)]
        for j in range(rng.randint(1, 3)):
            items.append(Item(self.output(sources), rng.choice([None, f"a{j}"])))
        if self.chance(0.3):
            rng.shuffle(items)
        where = []
        non_root = [(s, c) for s, c in self.columns(sources[1:], "dimension")]
        if non_root and self.chance(0.45):              # narrow a dimension of a non-root party
            grouped = [(s, c) for s, c in non_root if any((s.alias, c.name) in g.expr.cols for g in groups)]
            s, c = rng.choice(grouped) if grouped and self.chance(0.5) else rng.choice(non_root)
            where.append(self.dim_condition(s, c, narrow=True))
        for _ in range(rng.choices([0, 1, 2], [0.5, 0.35, 0.15])[0]):
            where.append(self.condition(sources))
        having = None
        if self.chance(0.2):
            a = self.aggregate(sources)
            having = rng.choice([node("{} >= {}", agg("COUNT"), self.lit_or_param(rng.choice([10, 50, 200]), 0.5)),
                                 node("{} > {}", a, lit(rng.choice([0, 10, 1000]))),
                                 node("({} > 0 OR {} >= 30)", a, agg("COUNT"))])
        order, limit, offset = (), None, None
        if self.chance(0.4):
            picks = rng.sample(range(len(items)), rng.randint(1, len(items)))
            order = tuple((i, rng.choice(["", "ASC", "DESC"]), rng.choice(["", "", "NULLS FIRST", "NULLS LAST"]))
                          for i in picks)
            if self.chance(0.3):
                limit = rng.choice([1, 3, 10])
                offset = rng.choice([None, None, 1])
                for i, it in enumerate(items):           # a total order, so that LIMIT picks the same rows
                    if it.group is not None and i not in [o[0] for o in order]:
                        order += ((i, "", ""),)
        return Query(sources, tuple(items), tuple(where), tuple(groups), having, order, limit, offset)


# ------------------------------------------------------------------ running


@dataclass
class Case:
    query: Query
    verdict: Verdict
    seconds: float

    @property
    def kind(self) -> str:
        if not self.verdict.failed:
            return self.verdict.outcome
        return "crash" if "raised" in self.verdict.detail else "mismatch"


@dataclass
class Runner:
    """Generated queries over one demo world; one embedded federation for the secure share."""

    directory: Path
    seed: int
    persons: int = 2000
    report: object = print
    cases: list = field(default_factory=list)

    def run(self, n: int, secure_share: float = 0.0, time_limit: float | None = None, progress: int = 0) -> list[Case]:
        world = make_world(self.directory, self.persons)
        federation = load_federation(world.path)
        oracle_con = open_union_database(federation)
        gen = AnalystGenerator(random.Random(self.seed))
        pick = random.Random(f"secure/{self.seed}")
        embedded = None
        start = time.perf_counter()
        try:
            for _ in range(n):
                if time_limit is not None and time.perf_counter() - start > time_limit:
                    break
                q = gen.query()
                secure = pick.random() < secure_share
                if secure and embedded is None:
                    from sqlmpc.party.embedded import EmbeddedFederation
                    embedded = EmbeddedFederation(federation, timeout=120)
                t = time.perf_counter()
                if progress and len(self.cases) % progress == 0 and self.cases:
                    print(f"{len(self.cases)} queries, {time.perf_counter() - start:.0f} s: {summary(self.cases)}",
                          flush=True)
                v = d.judge(q, world, federation, oracle_con, embedded if secure else None)
                self.cases.append(Case(q, v, time.perf_counter() - t))
                if v.failed:
                    sql, params = q.render()
                    self.report(f"{self.cases[-1].kind.upper()} (query {len(self.cases)}, "
                                f"{'secure' if secure else 'oracle'}): {v.detail}\n  query: {sql}  params={params}")
                    if v.secure and "raised" in v.detail:          # fresh parties after a crash
                        embedded.close()
                        embedded = None
        finally:
            if embedded is not None:
                embedded.close()
        return self.cases


def summary(cases: list[Case]) -> dict:
    refused: dict = {}
    for c in cases:
        if c.verdict.outcome.startswith("refused"):
            name = c.verdict.outcome.split(": ")[1]
            refused[name] = refused.get(name, 0) + 1
    slowest = max(cases, key=lambda c: c.seconds) if cases else None
    return {"run": len(cases), "answered": sum(c.verdict.outcome == "agreed" for c in cases),
            "answered (also secure)": sum(c.verdict.outcome == "agreed" and c.verdict.secure for c in cases),
            "secure": sum(c.verdict.secure for c in cases),
            "mismatches": sum(c.kind == "mismatch" for c in cases), "crashes": sum(c.kind == "crash" for c in cases),
            "refused": dict(sorted(refused.items(), key=lambda kv: -kv[1])),
            "slowest s": round(slowest.seconds, 2) if slowest else 0.0,
            "slowest query": slowest.query.render() if slowest else None}
