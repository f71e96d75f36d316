"""Differential testing of the dialect: generated queries against the oracle, the secure engine and
an independent expectation computed with plain DuckDB.

A *world* is a small random 3-party federation (a few hundred persons, NULLs, duplicate keys,
values at the declared bounds, sometimes an empty table) written as Parquet files.  The generator
builds queries from the dialect: every aggregate and scalar function of the registry, arithmetic
over aggregate outputs, CASE and binning (CASE, WIDTH_BUCKET) of dimensions and measures, FILTER,
HAVING, INNER/LEFT joins over 1-3 parties, UNION ALL in FROM, ORDER BY/LIMIT/OFFSET, parameters,
literals inside and outside the domains.  Each query is kept as a small tree (:class:`Query`), so
that it renders both in the sqlmpc dialect and as plain DuckDB SQL, and so that a failure can be
shrunk by deleting parts of it.  :func:`coverage` parses the generated SQL with the dialect's own
lark grammar and lists every rule, alias, terminal and registry name never produced: the CI test
fails when the grammar or the registry grows a construct the generator does not reach.

Each query must end in exactly one of:

* refused before any party works, with a :class:`sqlmpc.errors.ProgrammingError` subclass from
  parsing, binding or planning (:func:`plan_outcome`); or
* a result of the oracle that equals the *expectation* (:func:`expected`), and, for the sampled
  cases, a result of the secure engine (embedded federation) that equals both.

The expectation re-implements docs/secure-execution.md §3 plainly, without sqlmpc's code: the
public grid (domains from the generator's own catalog, NULL for nullable columns and LEFT-joined
tables, narrowed by WHERE conditions on a group's own columns), per-cell values from one DuckDB
GROUP BY over the union of all data, contributor sets per aggregate (the generator knows each
argument's terms and CASE/COALESCE branches as it builds them), MIN/MAX of a dimension (k persons
must hold the released value), secondary suppression along the grid's lines, then HAVING on
released cells, ORDER BY and LIMIT.  **Not re-implemented: dominance** — the worlds' policies
declare no dominance rule, so it never applies here (tests/test_randomised.py covers it against
the oracle).  Each world uses one key space, so a person is the root table's key.

**Why it missed four silent wrong numbers** (VAR of ``x + 1``, AVG of a CASE without ELSE,
WIDTH_BUCKET over a LEFT JOIN, WHERE narrowing a grouped party to one value — all in the secure
engine, tests/test_silent_wrong_numbers.py) that an independent generator over the demo tables
found in 300 queries: (1) every query is compared with the *oracle*, but only ~1 % reach the
secure engine (30 of 300 in CI, 40 of 3,000 in the bench), and all four bugs lived there; (2) its
worlds declare most measures nullable, while the demo's (and a real catalog's) are declared NOT
NULL — the CASE bug was on the path for a CASE over non-nullable columns, which these worlds
rarely take; (3) it is built for grammar coverage, not for what analysts write: 61 % of its
queries are refused (functions over or inside aggregates, attributes, out-of-domain literals in
the same query as the sound parts), expressions inside aggregates are a small share of
arguments (``x + 1`` in a variance ≈ 2 % of aggregates), and the combinations that failed (a
non-null measure of a LEFT-joined table binned, a WHERE ``=`` on a grouped dimension of a
non-root relation beside another relation's group) are products of several rare choices.
tests/analyst.py is the generator of analyst SQL over the demo tables, with a large secure share.
"""

from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from lark import Token, Tree

from compare import assert_same_result, same
from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.local.data import open_union_database
from sqlmpc.oracle import run_oracle
from sqlmpc.party.embedded import EmbeddedFederation
from sqlmpc.plan.bind import bind
from sqlmpc.plan.planner import plan_query
from sqlmpc.sql import parse, parse_query
from sqlmpc.sql.params import bind_parameters
from sqlmpc.sql.grammar import lark_parser as _lark
from sqlmpc.sql.parser import AGGREGATE_NAMES, CAST_TYPES, DATE_PARTS, SCALAR_NAMES

# ------------------------------------------------------------------ the worlds

FEDERATION = """
[federation]
name = "differential"

[policy]
min_cell_size = {k}

[parties.h]
address = "127.0.0.1:7701"
[parties.h.tables.t]
source = "h/t.parquet"
[parties.h.tables.t.columns]
pid  = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", max_rows = 2 }}
g    = {{ type = "VARCHAR", role = "dimension", domain = ["a", "b", "c"] }}
s    = {{ type = "VARCHAR", role = "dimension", domain = ["f", "m"], nullable = false }}
x    = {{ type = "INTEGER", role = "measure", range = [-20, 50] }}
w    = {{ type = "DOUBLE", role = "measure", range = [0, 10], scale = 1, nullable = false }}
note = {{ type = "VARCHAR", role = "attribute" }}

[parties.i]
address = "127.0.0.1:7702"
[parties.i.tables.c]
source = "i/c.parquet"
[parties.i.tables.c.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", max_rows = 2 }}
y   = {{ type = "INTEGER", role = "dimension", domain = {{ from = 2020, to = 2022 }}, nullable = false }}
v   = {{ type = "DOUBLE", role = "measure", range = [0, 100], scale = 2 }}
[parties.i.tables.t2]
source = "i/t2.parquet"
[parties.i.tables.t2.columns]
pid  = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", max_rows = 2 }}
g    = {{ type = "VARCHAR", role = "dimension", domain = ["a", "b", "c"] }}
s    = {{ type = "VARCHAR", role = "dimension", domain = ["f", "m"], nullable = false }}
x    = {{ type = "INTEGER", role = "measure", range = [-20, 50] }}
w    = {{ type = "DOUBLE", role = "measure", range = [0, 10], scale = 1, nullable = false }}
note = {{ type = "VARCHAR", role = "attribute" }}

[parties.b]
address = "127.0.0.1:7703"
[parties.b.tables.p]
source = "b/p.parquet"
[parties.b.tables.p.columns]
pid = {{ type = "VARCHAR", role = "key", key_space = "pseudonym", unique = true }}
r   = {{ type = "VARCHAR", role = "dimension", domain = ["n", "s", "e"] }}
age = {{ type = "INTEGER", role = "measure", range = [0, 99], nullable = false }}
"""


@dataclass(frozen=True)
class Col:
    """A column of the generator's own copy of the catalog."""

    name: str
    type: str
    role: str                    # key | dimension | measure | attribute
    domain: tuple = ()
    range: tuple = ()
    nullable: bool = True


ROW_COLUMNS = (Col("pid", "VARCHAR", "key", nullable=False), Col("g", "VARCHAR", "dimension", ("a", "b", "c")),
               Col("s", "VARCHAR", "dimension", ("f", "m"), nullable=False),
               Col("x", "INTEGER", "measure", range=(-20, 50)),
               Col("w", "DOUBLE", "measure", range=(0, 10), nullable=False), Col("note", "VARCHAR", "attribute"))
TABLES = {
    ("h", "t"): ROW_COLUMNS,
    ("i", "c"): (Col("pid", "VARCHAR", "key", nullable=False),
                 Col("y", "INTEGER", "dimension", (2020, 2021, 2022), nullable=False),
                 Col("v", "DOUBLE", "measure", range=(0, 100))),
    ("i", "t2"): ROW_COLUMNS,
    ("b", "p"): (Col("pid", "VARCHAR", "key", nullable=False), Col("r", "VARCHAR", "dimension", ("n", "s", "e")),
                 Col("age", "INTEGER", "measure", range=(0, 99), nullable=False)),
}
KEY = Col("pid", "VARCHAR", "key", nullable=False)
OUTSIDE = {"g": "'z'", "s": "'x'", "y": "2019", "r": "'w'"}     # literals outside each dimension's domain


@dataclass
class World:
    path: Path                   # the federation file
    k: int
    data: dict                   # (party, table) -> list of row tuples
    con: duckdb.DuckDBPyConnection = field(repr=False, default=None)

    def describe(self) -> str:
        return f"k={self.k}, rows " + ", ".join(f"{p}.{t} {len(r)}" for (p, t), r in self.data.items())


def make_world(directory: Path, seed: int, persons: int | None = None) -> World:
    """A random federation: k, data with NULLs, bound values, duplicate keys, sometimes an empty table."""
    rng = random.Random(seed)
    persons = persons or rng.randint(150, 300)
    k = rng.choice([1, 2, 3, 5, 10])
    pids = [f"p{i:04d}" for i in range(persons)]
    used_g = rng.sample(["a", "b", "c"], rng.randint(1, 3))         # a domain value may hold nobody

    def rows_t(share):
        out = []
        for pid in pids:
            for _ in range(rng.choices([0, 1, 2], [1 - share, share * 0.8, share * 0.2])[0]):
                x = rng.choice([None, -20, 50, 0] + [rng.randint(-20, 50)] * 6)
                out.append((pid, rng.choice(used_g + [None]), rng.choice("fm"), x,
                            round(rng.choice([0, 10, rng.uniform(0, 10)]), 1), rng.choice(["", "vip", None])))
        return out

    data = {
        ("h", "t"): rows_t(0.7),
        ("i", "c"): [(pid, rng.choice([2020, 2021, 2022, 2022]),
                      rng.choice([None, 0.0, 100.0] + [round(rng.uniform(0, 100), 2)] * 5))
                     for pid in pids for _ in range(rng.choice([0, 1, 1, 2]))],
        ("i", "t2"): rows_t(0.3),
        ("b", "p"): [(pid, rng.choice(["n", "s", "e", None]), rng.choice([0, 99, rng.randint(0, 99)]))
                     for pid in pids if rng.random() < 0.85],
    }
    if rng.random() < 0.2:                                  # an empty input
        data[rng.choice(list(data))] = []
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "federation.toml").write_text(FEDERATION.format(k=k))
    types = {"VARCHAR": pa.string(), "INTEGER": pa.int32(), "DOUBLE": pa.float64()}
    con = duckdb.connect()
    for (party, table), rows in data.items():
        cols = TABLES[(party, table)]
        values = list(zip(*rows)) if rows else [[] for _ in cols]
        path = directory / party / f"{table}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({c.name: pa.array(list(v), type=types[c.type]) for c, v in zip(cols, values)}), path)
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {party}")
        con.execute(f"CREATE TABLE {party}.{table} AS SELECT * FROM read_parquet('{path}')")
    return World(directory / "federation.toml", k, data, con)


# ------------------------------------------------------------------ expressions


@dataclass(frozen=True)
class E:
    """An expression: a template over children, rendered for sqlmpc or for plain DuckDB.

    ``terms`` is the argument as a sum of terms for the contributor rule (§3.1): a tuple of
    (branch conditions, column factors), or None where the dialect refuses it inside an aggregate.
    """

    fmt: str
    kids: tuple = ()
    duck: str | None = None           # DuckDB's template when it differs (uses {0}, {1}, ...)
    cols: frozenset = frozenset()     # (alias, column) inside
    agg: bool = False
    terms: tuple | None = None
    param: tuple = ()                 # (value,) for a ``?``
    col: Col | None = None

    def render(self, target: str, params: list | None = None, subst: dict | None = None) -> str:
        if self.param:
            if target == "sqlmpc":
                if params is not None:
                    params.append(self.param[0])
                return "?"
            return sql_literal(self.param[0])
        if subst is not None and self.col is not None and self.cols and next(iter(self.cols)) in subst:
            return subst[next(iter(self.cols))]
        kids = [k.render(target, params, subst) for k in self.kids]
        if target == "duckdb" and self.duck is not None:
            return self.duck.format(*kids)
        return self.fmt.format(*kids)

    def sql(self) -> str:
        return self.render("sqlmpc", [])


def sql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def lit(value) -> E:
    return E(sql_literal(value), terms=() if value is None else (((), ()),))


def raw(text: str) -> E:
    return E(text, terms=(((), ()),))


def param(value) -> E:
    return E("?", param=(value,), terms=(((), ()),))


def column(alias: str, c: Col, quoted: bool = False) -> E:
    text = f'{alias}."{c.name}"' if quoted else f"{alias}.{c.name}"
    e = E(text, cols=frozenset({(alias, c.name)}), col=c)
    return replace(e, terms=(((), (e,)),))


def node(fmt: str, *kids: E, duck: str | None = None, terms=None, agg: bool | None = None) -> E:
    return E(fmt, kids, duck, frozenset().union(*(k.cols for k in kids)) if kids else frozenset(),
             any(k.agg for k in kids) if agg is None else agg, terms)


def arith(op: str, a: E, b: E) -> E:
    """a op b, with its terms: + - add them, * multiplies them out, / by a constant keeps them."""
    terms = None
    if a.terms is not None and b.terms is not None:
        if op in "+-":
            terms = a.terms + b.terms
        elif op == "*":
            terms = tuple((c1 + c2, f1 + f2) for (c1, f1), (c2, f2) in itertools.product(a.terms, b.terms))
    if op == "/" and not b.cols and a.terms is not None:
        terms = a.terms
    return node("({} " + op + " {})", a, b, terms=terms)


def neg(a: E) -> E:
    return node("-{}", a, terms=a.terms)


def case(branches: list[tuple[E, E]], default: E | None, operand: E | None = None) -> E:
    """CASE [operand] WHEN ... THEN ... [ELSE ...] END; its terms are each branch's, under 'taken'."""
    kids, fmt = [], "CASE"
    if operand is not None:
        kids.append(operand)
        fmt += " {}"
    for when, then in branches:
        kids += [when, then]
        fmt += " WHEN {} THEN {}"
    if default is not None:
        kids.append(default)
        fmt += " ELSE {}"
    fmt += " END"
    terms = None
    values = [t for _, t in branches] + ([default] if default is not None else [])
    if all(v.terms is not None for v in values):
        conds = [node("({} = {})", operand, w) if operand is not None else w for w, _ in branches]
        terms = ()
        for i, (_, then) in enumerate(branches):
            taken = node(" AND ".join(["({}) IS NOT TRUE"] * i + ["({}) IS TRUE"]), *conds[:i], conds[i])
            terms += tuple(((taken,) + c, f) for c, f in then.terms)
        if default is not None:
            taken = node(" AND ".join(["({}) IS NOT TRUE"] * len(conds)), *conds) if conds else None
            terms += tuple((((taken,) if taken else ()) + c, f) for c, f in default.terms)
    return node(fmt, *kids, terms=terms)


def coalesce(a: E, b: E) -> E:
    terms = None
    if a.terms is not None and b.terms is not None:
        terms = tuple(((node("{} IS NOT NULL", a),) + c, f) for c, f in a.terms) + \
            tuple(((node("{} IS NULL", a),) + c, f) for c, f in b.terms)
    return node("COALESCE({}, {})", a, b, terms=terms)


def width_bucket(x: E, lo, hi, n: int) -> E:
    """PostgreSQL's WIDTH_BUCKET; for DuckDB (which has none) the formula, clamped."""
    duck = (f"CASE WHEN {{0}} IS NULL THEN NULL WHEN {{0}} < {lo} THEN 0 WHEN {{0}} >= {hi} THEN {n + 1} "
            f"ELSE CAST(floor(({{0}} - {lo}) * {n} / ({hi} - {lo})) AS INTEGER) + 1 END")
    return node(f"WIDTH_BUCKET({{}}, {lo}, {hi}, {n})", x, duck=duck)


@dataclass(frozen=True)
class Agg:
    """An aggregate call with what the release rules need to know about it."""

    fn: str
    args: tuple                      # E arguments ("*" for COUNT(*))
    filter: E | None = None
    distinct: bool = False

    @property
    def expr(self) -> E:
        if self.fn == "COUNT" and not self.args:
            inner, kids = "COUNT(*)", []
        else:
            inner = f"{self.fn}({'DISTINCT ' if self.distinct else ''}" + ", ".join("{}" for _ in self.args) + ")"
            kids = list(self.args)
        if self.filter is not None:
            inner += " FILTER (WHERE {})"
            kids.append(self.filter)
        return node(inner, *kids, agg=True)

    def contributor_sets(self) -> list[E] | None:
        """Conditions on a row, each defining a set of persons that must hold ≥ k (None: refused form)."""
        if self.fn == "COUNT":
            sets = [raw("TRUE")] if not self.args else [node("{} IS NOT NULL", self.args[0])]
        elif self.fn in ("MIN", "MAX"):
            sets = [node("{} IS NOT NULL", self.args[0])]
        else:
            both = [node("{} IS NOT NULL", a) for a in self.args] if len(self.args) == 2 else []
            sets = []
            for a in self.args:
                if a.terms is None:
                    return None
                for conds, factors in a.terms:
                    tests = list(conds) + [node("{} <> 0", f) for f in factors] + both
                    sets.append(node(" AND ".join(["({})"] * len(tests)), *tests) if tests else raw("TRUE"))
        if self.filter is not None:
            sets = [node("({}) AND ({})", self.filter, s) for s in sets]
        return sets


def aggregates_in(e: E, found: dict) -> None:
    for k in e.kids:
        aggregates_in(k, found)
    if isinstance(e, AggE):
        found.setdefault(e.sql(), e.agg_call)


@dataclass(frozen=True)
class AggE(E):
    agg_call: Agg | None = None


def agg(fn: str, *args: E, filter: E | None = None, distinct: bool = False) -> AggE:
    a = Agg(fn, tuple(args), filter, distinct)
    e = a.expr
    return AggE(e.fmt, e.kids, e.duck, e.cols, True, None, (), None, a)


# ------------------------------------------------------------------ queries


@dataclass(frozen=True)
class Source:
    """A relation of FROM: a table, or (root only) a UNION ALL of the table held by two parties."""

    alias: str
    party: str
    table: str
    join: str = ""                   # "", "JOIN", "INNER JOIN", "LEFT JOIN", "LEFT OUTER JOIN"
    union_where: tuple = ()          # UNION ALL root: (condition or None) per branch

    @property
    def cols(self) -> tuple:
        cols = TABLES[(self.party, self.table)]
        return tuple(c for c in cols if c.role != "attribute") if self.union_where else cols

    @property
    def nullable(self) -> bool:
        return self.join.startswith("LEFT")

    def render(self, root_alias: str) -> str:
        if self.union_where:
            names = ", ".join(c.name for c in self.cols)
            branches = [f"SELECT {names} FROM {table}" + (f" WHERE {w}" if w else "")
                        for table, w in zip(("h.t", "i.t2"), self.union_where)]
            text = f"({' UNION ALL '.join(branches)}) AS {self.alias}"
        else:
            text = f"{self.party}.{self.table} {self.alias}"
        if not self.join:
            return text
        on = f"{self.alias}.pid = {root_alias}.pid" if self.alias > root_alias else f"{root_alias}.pid = {self.alias}.pid"
        return f" {self.join} {text} ON {on}"


@dataclass(frozen=True)
class Group:
    expr: E
    ref: str                         # how GROUP BY names it: "expr", "alias" or "position"
    bins: tuple | None = None        # a binning of a measure: its outputs, in branch order
    measure: tuple = ()              # (source alias, Col) the binning reads


@dataclass(frozen=True)
class Item:
    expr: E
    alias: str | None = None
    group: int | None = None         # the GROUP BY it is


@dataclass(frozen=True)
class Query:
    sources: tuple
    items: tuple
    where: tuple = ()
    groups: tuple = ()
    having: E | None = None
    order: tuple = ()                # (item index, "ASC"/"DESC"/"", "NULLS FIRST"/"NULLS LAST"/"")
    limit: int | None = None
    offset: int | None = None
    decor: int = 0                   # 1: a block comment first, 2: a line comment last, 3: a trailing ';'

    def render(self) -> tuple[str, list]:
        params: list = []
        items = []
        for it in self.items:
            text = it.expr.render("sqlmpc", params)
            items.append(text + (f" AS {it.alias}" if it.alias else ""))
        root = self.sources[0]
        sql = "SELECT " + ", ".join(items) + " FROM " + root.render(root.alias)
        sql += "".join(s.render(root.alias) for s in self.sources[1:])
        if self.where:
            sql += " WHERE " + " AND ".join(w.render("sqlmpc", params) for w in self.where)
        if self.groups:
            refs = []
            for i, g in enumerate(self.groups):
                index = next(j for j, it in enumerate(self.items) if it.group == i)
                item = self.items[index]
                refs.append(str(index + 1) if g.ref == "position" or (g.ref == "alias" and not item.alias)
                            else item.alias if g.ref == "alias" else g.expr.render("sqlmpc", params))
            sql += " GROUP BY " + ", ".join(refs)
        if self.having is not None:
            sql += " HAVING " + self.having.render("sqlmpc", params)
        if self.order:
            sql += " ORDER BY " + ", ".join(
                " ".join(filter(None, [self.items[i].alias or str(i + 1), d, n])) for i, d, n in self.order)
        if self.limit is not None:
            sql += f" LIMIT {self.limit}" + (f" OFFSET {self.offset}" if self.offset is not None else "")
        sql = {1: "/* generated */ " + sql, 2: sql + " -- generated", 3: sql + ";"}.get(self.decor, sql)
        return sql, params


AGG_1 = ["SUM", "AVG", "STDDEV", "STDDEV_SAMP", "STDDEV_POP", "VARIANCE", "VAR_SAMP", "VAR_POP"]
AGG_2 = ["CORR", "COVAR_POP", "COVAR_SAMP", "REGR_SLOPE", "REGR_INTERCEPT", "REGR_R2"]
JOIN_WORDS = ["JOIN", "INNER JOIN", "LEFT JOIN", "LEFT OUTER JOIN"]
NUMERIC_TYPES = ["INTEGER", "INT", "BIGINT", "SMALLINT", "DOUBLE", "FLOAT", "REAL", "DECIMAL(10, 2)", "DECIMAL",
                 "NUMERIC", "DECIMAL(8)"]
DATES = ["DATE '2024-03-01'", "DATE '2023-12-31'"]


class Generator:
    """Random queries over a world's catalog (seeded)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def columns(self, sources, role: str):
        return [(s, c) for s in sources for c in s.cols if c.role == role]

    def col(self, s: Source, c: Col) -> E:
        return column(s.alias, c, quoted=self.chance(0.05))

    # -- literals: inside the domain, at the bounds, outside; sometimes as parameters

    def value(self, c: Col, outside: float = 0.1):
        rng = self.rng
        if c.role == "dimension":
            if rng.random() < outside:
                text = OUTSIDE[c.name]
                return text.strip("'") if text.startswith("'") else int(text)
            return rng.choice(c.domain)
        lo, hi = c.range
        return rng.choice([lo, hi, round(rng.uniform(lo, hi), 1), rng.randint(lo, hi), hi + 10 if rng.random()
                           < outside else lo])

    def literal(self, c: Col, outside: float = 0.1) -> E:
        v = self.value(c, outside)
        if self.chance(0.1):
            return param(v)
        if isinstance(v, (int, float)) and v < 0 and self.chance(0.5):
            return neg(lit(-v))
        return lit(v)

    # -- conditions

    def dim_condition(self, s: Source, c: Col) -> E:
        rng = self.rng
        x = self.col(s, c)
        a, b = self.literal(c), self.literal(c)
        forms = [lambda: node("{} = {}", x, a), lambda: node("{} <> {}", x, a), lambda: node("{} != {}", x, a),
                 lambda: node("{} IN ({}, {})", x, a, b), lambda: node("{} NOT IN ({}, {})", x, a, b),
                 lambda: node("{} IS NULL", x), lambda: node("{} IS NOT NULL", x),
                 lambda: node("NOT {} = {}", x, a), lambda: node("({} = {} OR {} = {})", x, a, x, b),
                 lambda: node("COALESCE({}, {}) = {}", x, a, b)]
        if c.type == "VARCHAR":
            forms += [lambda: node("{} LIKE 'a%'", x), lambda: node("{} NOT LIKE '_'", x),
                      lambda: node("{} || '-' = {} || '-'", x, a)]
        else:
            forms += [lambda: node("{} BETWEEN {} AND {}", x, a, b), lambda: node("{} >= {}", x, a),
                      lambda: node("{} % 2 = 0", x), lambda: node("{} NOT BETWEEN 2021 AND 2021", x),
                      lambda: node("CAST({} AS VARCHAR) LIKE '%1'", x)]
        return rng.choice(forms)()

    def measure_condition(self, s: Source, c: Col) -> E:
        x = self.col(s, c)
        a, b = self.literal(c), self.literal(c)
        return self.rng.choice([
            lambda: node("{} > {}", x, a), lambda: node("{} <= {}", x, a), lambda: node("{} < {}", x, a),
            lambda: node("{} BETWEEN {} AND {}", x, a, b), lambda: node("ROUND({}) >= {}", x, a),
            lambda: node("ABS({} - {}) < 10", x, a), lambda: node("LEAST({}, {}) = {}", x, a, a),
            lambda: node("GREATEST({}, 0) > {}", x, a), lambda: node("{} IS NULL", x),
            lambda: node("CAST({} AS INTEGER) % 3 = 1", x), lambda: node("{} * 2 + 1 > {}", x, a),
            lambda: node("-{} < {}", x, a), lambda: node("{} / 2 >= {}", x, a),
            lambda: node(f"CAST({{}} AS {self.rng.choice(NUMERIC_TYPES)}) >= {{}}", x, a)])()

    def condition(self, sources) -> E:
        rng = self.rng
        r = rng.random()
        dims, measures = self.columns(sources, "dimension"), self.columns(sources, "measure")
        if r < 0.4 and dims:
            return self.dim_condition(*rng.choice(dims))
        if r < 0.7 and measures:
            return self.measure_condition(*rng.choice(measures))
        if r < 0.78:
            attrs = self.columns(sources, "attribute")
            if attrs:
                s, c = rng.choice(attrs)
                return rng.choice([node("{} = 'vip'", self.col(s, c)), node("{} IS NULL", self.col(s, c)),
                                   node("{} LIKE 'v%'", self.col(s, c))])
        if r < 0.85:
            s = rng.choice(sources)
            return node(f"{{}} IS {rng.choice(['', 'NOT '])}NULL", column(s.alias, KEY))
        if r < 0.92 and len(measures) > 1:
            (s1, c1), (s2, c2) = rng.sample(measures, 2)
            return node("{} + {} > {}", self.col(s1, c1), self.col(s2, c2), lit(rng.randint(0, 60)))
        d = rng.choice(DATES)
        return rng.choice([node(f"YEAR({d}) = 2024"), node(f"MONTH({d}) = 3"), node(f"EXTRACT(DAY FROM {d}) = 1"),
                           node(f"DATE_PART('year', {d}) > 2023"), node("TRUE"), node("1 = 1"),
                           node(f"EXTRACT({rng.choice(['YEAR', 'MONTH'])} FROM {d}) = 2023"), node("(FALSE OR TRUE)"),
                           node(f"CAST('1' AS {rng.choice(['BOOLEAN', 'BOOL'])})"),
                           node(f"CAST('2024-03-01' AS DATE) = {d}"), node("CAST(1 AS TEXT) = '1'"),
                           node("NOT (NULL IS NOT NULL)"), node("2.5e1 > .5")])

    # -- aggregate arguments, aggregates, outputs

    def argument(self, sources, depth: int = 0) -> E:
        rng = self.rng
        measures = self.columns(sources, "measure")
        m = self.col(*rng.choice(measures))
        r = rng.random()
        if r < 0.35 or depth > 1:
            return m
        if r < 0.45:
            return arith(rng.choice("+-*"), m, lit(rng.choice([1, 2, 7])))
        if r < 0.5:
            return arith("/", m, lit(rng.choice([2, 4])))
        if r < 0.6:
            then = self.argument(sources, depth + 1)
            return case([(self.condition(sources), then)], rng.choice([lit(0), None, lit(1), m]))
        if r < 0.65:
            return coalesce(m, lit(0))
        if r < 0.72:
            return arith(rng.choice("+*"), m, self.col(*rng.choice(measures)))
        if r < 0.76:
            return neg(m)
        if r < 0.8 or self.chance(0.7):
            dims = [d for d in self.columns(sources, "dimension") if d[1].type == "INTEGER"]
            return self.col(*rng.choice(dims)) if dims and self.chance(0.2) else m
        # functions of a measure inside an aggregate: refused (they select persons by value)
        return rng.choice([node("ABS({})", m), node("ROUND({}, 1)", m), node("GREATEST({}, 0)", m),
                           node("LEAST({}, 5)", m), arith("%", m, lit(3))])

    def aggregate(self, sources) -> AggE:
        rng = self.rng
        filt = self.condition(sources) if self.chance(0.2) else None
        r = rng.random()
        if r < 0.15:
            return agg("COUNT", filter=filt)
        if r < 0.2:
            return agg("COUNT", self.argument(sources), filter=filt)
        if r < 0.25:
            return agg("COUNT", column(rng.choice(sources).alias, KEY), filter=filt, distinct=True)
        if r < 0.33:
            dims = self.columns(sources, "dimension")
            s, c = rng.choice(dims)
            target = self.col(s, c) if self.chance(0.85) else self.col(*rng.choice(self.columns(sources, "measure")))
            return agg(rng.choice(["MIN", "MAX"]), target, filter=filt)
        if r < 0.8:
            return agg(rng.choice(AGG_1), self.argument(sources), filter=filt)
        return agg(rng.choice(AGG_2), self.argument(sources), self.argument(sources), filter=filt)

    def output(self, sources) -> E:
        """An aggregate, or arithmetic / functions over aggregate outputs."""
        rng = self.rng
        a = self.aggregate(sources)
        r = rng.random()
        if r < 0.55:
            return a
        b = self.aggregate(sources)
        count = agg("COUNT")
        if r < 0.9:             # arithmetic: computed by the secure engine
            return rng.choice([
                lambda: arith(rng.choice("+-*"), a, b), lambda: arith("/", a, count), lambda: arith("/", a, b),
                lambda: arith(rng.choice("*/"), a, lit(rng.choice([2, 100, 0.5]))),
                lambda: arith("-", lit(1), a), lambda: neg(a), lambda: arith("/", a, arith("+", b, lit(1)))])()
        return rng.choice([     # functions over aggregates: refused
            lambda: node("ROUND({}, 2)", a),
            lambda: node("ABS({})", a), lambda: node("COALESCE({}, 0)", a), lambda: node("LEAST({}, 10)", a),
            lambda: node("GREATEST({}, {})", a, b), lambda: node("CAST({} AS DOUBLE)", a),
            lambda: node("CASE WHEN {} > 5 THEN 'many' ELSE 'few' END", a),
            lambda: arith("%", a, lit(7))])()

    # -- groups

    def group(self, sources) -> Group | None:
        rng = self.rng
        ref = rng.choice(["expr", "alias", "position"])
        if self.chance(0.7):
            s, c = rng.choice(self.columns(sources, "dimension"))
            x = self.col(s, c)
            if self.chance(0.55):
                return Group(x, ref)
            a = self.literal(c, 0.05)
            if c.type == "VARCHAR":
                e = rng.choice([lambda: case([(node("{} = {}", x, a), lit("A"))], lit("B")),
                                lambda: case([(a, lit(1))], lit(0), operand=x),
                                lambda: node("COALESCE({}, 'none')", x), lambda: node("{} || '!'", x)])()
            else:
                e = rng.choice([lambda: arith("-", x, lit(2000)), lambda: arith("%", x, lit(2)),
                                lambda: node("LEAST({}, 2021)", x), lambda: node("GREATEST({}, 2021)", x),
                                lambda: node("ABS({} - 2021)", x), lambda: node("ROUND({} / 3, 1)", x),
                                lambda: node("CAST({} AS VARCHAR)", x),
                                lambda: case([(node("{} < 2021", x), lit("old"))], lit("new"))])()
            return Group(e, ref)
        s, c = rng.choice(self.columns(sources, "measure"))
        x = self.col(s, c)
        lo, hi = c.range
        if self.chance(0.5):
            n = rng.randint(1, 5)
            a, b = rng.choice([(lo, hi), (0, hi // 2), (lo - 5, hi + 5)])
            return Group(width_bucket(x, a, b, n), ref, ("NULL?",) + tuple(range(n + 2)), (s.alias, c))
        cut = rng.randint(lo, hi)
        branches = [(node("{} < {}", x, lit(cut)), lit("low"))]
        if self.chance(0.4):
            branches.append((node("{} < {}", x, lit(cut + 10)), lit("mid")))
        if c.nullable and self.chance(0.3):
            branches.insert(0, (node("{} IS NULL", x), lit("none")))
        default = "high" if self.chance(0.8) else None
        bins = tuple(dict.fromkeys([t.fmt.strip("'") for _, t in branches] + [default]))
        return Group(case(branches, lit(default) if default else None), ref, bins, (s.alias, c))

    # -- a whole query

    def sources(self) -> tuple:
        rng = self.rng
        tables = list(TABLES)
        n = rng.choices([1, 2, 3], [0.4, 0.35, 0.25])[0]
        if self.chance(0.12):
            root = Source("t0", "h", "t", union_where=tuple(
                rng.choice([None, None, "x > 0", "note = 'vip'", "g <> 'a'"]) for _ in range(2)))
            rest = [t for t in tables if t[1] not in ("t", "t2")]
        else:
            first = rng.choice(tables)
            root = Source("t0", *first)
            rest = [t for t in tables if t != first]
        chosen = rng.sample(rest, min(n - 1, len(rest)))
        return (root,) + tuple(Source(f"t{i + 1}", p, t, join=rng.choice(JOIN_WORDS)) for i, (p, t) in enumerate(chosen))

    def query(self) -> Query:
        rng = self.rng
        sources = self.sources()
        groups = []
        for _ in range(rng.choices([0, 1, 2, 3], [0.3, 0.4, 0.25, 0.05])[0]):
            g = self.group(sources)
            if g.expr.sql() not in [h.expr.sql() for h in groups]:
                groups.append(g)
        items = [Item(g.expr, rng.choice([None, f"g{i}", f'"G {i}"']), group=i) for i, g in enumerate(groups)]
        for j in range(rng.randint(1, 3)):
            items.append(Item(self.output(sources), rng.choice([None, f"a{j}", f"a{j}"])))
        if self.chance(0.08):
            items.append(Item(rng.choice([lit(1), lit("x"), raw("TRUE")]), "c"))
        rng.shuffle(items)
        where = tuple(self.condition(sources) for _ in range(rng.choices([0, 1, 2, 3], [0.35, 0.35, 0.2, 0.1])[0]))
        having = None
        if self.chance(0.2):
            a = self.output(sources)
            having = rng.choice([node("{} > {}", a, lit(rng.choice([0, 3, 10]))),
                                 node("{} >= {}", agg("COUNT"), param(rng.choice([1, 5, 20]))),
                                 node("({} > 0 OR {} < 0)", a, self.aggregate(sources))])
        order, limit, offset = (), None, None
        if self.chance(0.35):
            picks = rng.sample(range(len(items)), rng.randint(1, len(items)))
            order = tuple((i, rng.choice(["", "ASC", "DESC"]), rng.choice(["", "", "NULLS FIRST", "NULLS LAST"]))
                          for i in picks)
        if self.chance(0.2):
            limit = rng.choice([0, 1, 2, 5])
            offset = rng.choice([None, None, 1])
            if order:      # a total order, so that LIMIT picks the same rows everywhere
                for i, it in enumerate(items):
                    if it.group is not None and i not in [o[0] for o in order]:
                        order += ((i, "", ""),)
        decor = rng.choices([0, 1, 2, 3], [0.85, 0.05, 0.05, 0.05])[0]
        return Query(sources, tuple(items), where, tuple(groups), having, order, limit, offset, decor)


# ------------------------------------------------------------------ the independent expectation


class ExpectedRefusal(Exception):
    """The documented rules refuse the query (the name of the error class is the message)."""


@dataclass
class Expected:
    rows: list
    suppressed: list
    order: str                       # "exact" (grid order or a total ORDER BY) or "keys" (ties may move)
    order_by: tuple                  # the query's ORDER BY


def _sources_sql(q: Query) -> str:
    root = q.sources[0]
    return root.render(root.alias) + "".join(s.render(root.alias) for s in q.sources[1:])


def group_domain(q: Query, g: Group, con) -> tuple:
    """The group's public values: a binning's outputs, or the expression over its columns' domains
    (NULL added for nullable columns and LEFT-joined tables), narrowed by WHERE conjuncts on them."""
    by_alias = {s.alias: s for s in q.sources}
    if g.bins is not None:
        alias, c = g.measure
        can_be_null = c.nullable or by_alias[alias].nullable
        if g.bins[0] == "NULL?":                     # WIDTH_BUCKET: NULL only where x can be NULL
            return ((None,) if can_be_null else ()) + g.bins[1:]
        return g.bins
    cols = sorted(g.expr.cols)
    domains = []
    for alias, name in cols:
        c = next(c for c in by_alias[alias].cols if c.name == name)
        domains.append(tuple(c.domain) + ((None,) if c.nullable or by_alias[alias].nullable else ()))
    subst = {col: f"d.c{i}" for i, col in enumerate(cols)}
    conds = [w for w in q.where if w.cols <= set(cols)]
    values = ", ".join("(" + ", ".join([sql_literal(v) for v in combo] + [str(n)]) + ")"
                       for n, combo in enumerate(itertools.product(*domains)))
    names = ", ".join([f"c{i}" for i in range(len(cols))] + ["n"])
    where = " WHERE " + " AND ".join(f"({w.render('duckdb', subst=subst)})" for w in conds) if conds else ""
    sql = (f"SELECT v FROM (SELECT {g.expr.render('duckdb', subst=subst)} AS v, n FROM (VALUES {values}) "
           f"AS d({names}){where}) GROUP BY v ORDER BY min(n)")
    return tuple(r[0] for r in con.execute(sql).fetchall())


def lines_of(shape: tuple) -> list:
    """The whole grid and, for two or more groups, each line along one group (§3.4)."""
    cells = list(itertools.product(*(range(n) for n in shape)))
    lines = [list(range(len(cells)))] if len(cells) > 1 else []
    if len(shape) > 1:
        for d in range(len(shape)):
            along: dict = {}
            for i, cell in enumerate(cells):
                along.setdefault(cell[:d] + cell[d + 1:], []).append(i)
            lines += [line for line in along.values() if len(line) > 1]
    return lines


def suppress_secondary(released: list, persons: list, sets: list, lines: list, k: int) -> list:
    released = list(released)
    while True:
        short = [line for line in lines
                 if any(not released[c] for c in line) and any(released[c] for c in line)
                 and any(sum(s[c] for c in line if not released[c]) < k for s in sets)]
        if not short:
            return released
        for c in [min((c for c in line if released[c]), key=lambda c: (persons[c], c)) for line in short]:
            released[c] = False


def order_compare(order: tuple, a: tuple, b: tuple, digits: int | None = None) -> int:
    """ORDER BY as DuckDB sorts (NULLS LAST by default in either direction); numbers to ``digits``."""
    for i, direction, nulls in order:
        x, y = a[i], b[i]
        if digits and isinstance(x, float) and isinstance(y, float):
            x, y = float(f"{x:.{digits}g}"), float(f"{y:.{digits}g}")
        if x == y or (x is None and y is None):
            continue
        if x is None or y is None:
            return (1 if x is None else -1) * (-1 if nulls == "NULLS FIRST" else 1)
        return (-1 if x < y else 1) * (-1 if direction == "DESC" else 1)
    return 0


def expected(q: Query, world: World) -> Expected:
    """The result the documentation promises, from plain DuckDB on the union of all data."""
    con, k = world.con, world.k
    found: dict = {}
    for e in [it.expr for it in q.items] + ([q.having] if q.having is not None else []):
        aggregates_in(e, found)
    aggs = list(found.values())
    refusals = set()
    for a in aggs:
        if a.fn in ("MIN", "MAX") and a.args[0].col is not None and a.args[0].col.role == "measure":
            refusals.add("OrderStatisticPolicyError")
        elif a.contributor_sets() is None:
            refusals.add("AggregateArgumentPolicyError")
    domains = [group_domain(q, g, con) for g in q.groups]
    if any(not d for d in domains):
        refusals.add("EmptyGridError")
    if refusals:
        raise ExpectedRefusal(*sorted(refusals))
    grid = list(itertools.product(*domains))

    person = f"COUNT(DISTINCT {q.sources[0].alias}.pid)"
    sets = list({s.render("duckdb"): s for a in aggs for s in a.contributor_sets()})
    extremes = []                  # per MIN/MAX: the count columns of persons holding each value, extreme first
    cols = [g.expr.render("duckdb") for g in q.groups] + [person]
    cols += [f"{person} FILTER (WHERE {s})" for s in sets]
    for a in aggs:
        if a.fn in ("MIN", "MAX"):
            x = a.args[0]
            values = sorted(x.col.domain, reverse=a.fn == "MAX")
            first = len(cols)
            f = f"({a.filter.render('duckdb')}) AND " if a.filter is not None else ""
            cols += [f"{person} FILTER (WHERE {f}{x.render('duckdb')} = {sql_literal(v)})" for v in values]
            extremes.append(range(first, len(cols)))
    agg_items = [i for i, it in enumerate(q.items) if it.expr.agg]
    first_item = len(cols)
    cols += [q.items[i].expr.render("duckdb") for i in agg_items]
    cols.append(q.having.render("duckdb") if q.having is not None else "TRUE")
    sql = f"SELECT {', '.join(cols)} FROM {_sources_sql(q)}"
    if q.where:
        sql += " WHERE " + " AND ".join(f"({w.render('duckdb')})" for w in q.where)
    if q.groups:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(q.groups)))
    ng = len(q.groups)
    by_cell = {tuple(r[:ng]): r for r in con.execute(sql).fetchall()}

    def at(cell, i):
        row = by_cell.get(cell)
        return None if row is None else row[i]

    persons = [at(c, ng) or 0 for c in grid]
    set_counts = [[at(c, ng + 1 + j) or 0 for c in grid] for j in range(len(sets))]
    primary = []
    for n, cell in enumerate(grid):
        ok = persons[n] >= k and all(s[n] >= k for s in set_counts)
        for ix in extremes:
            ok = ok and next((at(cell, i) for i in ix if (at(cell, i) or 0) > 0), 0) >= k
        primary.append(ok)
    released = suppress_secondary(primary, persons, [persons] + set_counts,
                                  lines_of(tuple(len(d) for d in domains)), k)

    constants = {i: con.execute(f"SELECT {it.expr.render('duckdb')}").fetchone()[0]
                 for i, it in enumerate(q.items) if not it.expr.agg and it.group is None}
    rows, flags = [], []
    for n, cell in enumerate(grid):
        if released[n] and not at(cell, len(cols) - 1):
            continue                                          # HAVING drops released cells only
        row = []
        for i, it in enumerate(q.items):
            if it.group is not None:
                row.append(cell[it.group])
            elif it.expr.agg:
                row.append(at(cell, first_item + agg_items.index(i)) if released[n] else None)
            else:
                row.append(constants[i])
        rows.append(tuple(row))
        flags.append(not released[n])
    order = "exact"
    if q.order:
        pairs = sorted(zip(rows, flags), key=functools.cmp_to_key(lambda a, b: order_compare(q.order, a[0], b[0])))
        rows, flags = [p[0] for p in pairs], [p[1] for p in pairs]
        keyed = {i for i, _, _ in q.order}
        total = all(it.group is None or i in keyed for i, it in enumerate(q.items)) and \
            len([it for it in q.items if it.group is not None]) == len(q.groups)
        # Aggregates agree to ~1e-12 only: near-ties may sort either way, so compare such orders by keys.
        exact_keys = not any(q.items[i].expr.agg for i in keyed)
        order = "exact" if total and exact_keys else "keys"
    if q.offset:
        rows, flags = rows[q.offset:], flags[q.offset:]
    if q.limit is not None:
        rows, flags = rows[:q.limit], flags[:q.limit]
    return Expected(rows, flags, order, q.order)


# ------------------------------------------------------------------ judging one query

REL_TOL = 1e-6       # exact ratios vs DuckDB's doubles (variances of nearly constant values lose digits)


def plan_outcome(sql: str, params, federation) -> tuple[str, Exception | None]:
    """What the driver does before any party works: parse, bind parameters, bind, plan.
    Returns the SQL the parties would get and None, or the ProgrammingError that refused it."""
    try:
        statement = parse(sql)
        tree = bind_parameters(statement.tree, params)
        if tree is not statement.tree:          # as the driver: the bound tree, rendered and read again
            sql = tree.sql("duckdb")
            tree = parse_query(sql)
        plan_query(bind(tree, federation, sql))
    except errors.ProgrammingError as exc:
        return sql, exc
    return sql, None


def _canonical(row) -> tuple:
    """A sort key that tolerates the last digits of doubles."""
    return tuple((0, "") if v is None else (1, f"{float(v):.6g}") if isinstance(v, (int, float))
                 and not isinstance(v, bool) else (2, str(v)) for v in row)


def compare_expected(result, want: Expected, what: str) -> str | None:
    """None when ``result`` is what the documentation promises, else the difference."""
    got = result.rows()
    if len(got) != len(want.rows):
        return f"{what}: {len(got)} rows, expected {len(want.rows)}: got {got[:6]} expected {want.rows[:6]}"
    if want.order == "exact":
        pairs = list(zip(zip(got, result.suppressed), zip(want.rows, want.suppressed)))
    else:       # the same rows, each in ORDER BY order (aggregates that tie to 9 digits may swap)
        for a, b in zip(got, got[1:]):
            if order_compare(want.order_by, a, b) > 0 and order_compare(want.order_by, a, b, digits=9) > 0:
                return f"{what}: rows out of ORDER BY order: {a} before {b}"
        pairs = list(zip(sorted(zip(got, result.suppressed), key=lambda p: _canonical(p[0])),
                         sorted(zip(want.rows, want.suppressed), key=lambda p: _canonical(p[0]))))
    for (g, gs), (w, ws) in pairs:
        if gs != ws:
            return f"{what}: row {g} suppressed={gs}, expected {w} suppressed={ws}"
        if not all(same(a, b, REL_TOL) for a, b in zip(g, w)):
            return f"{what}: row {g}, expected {w}"
    return None


@dataclass
class Verdict:
    outcome: str                   # "agreed", "refused: <class>", or "FAILED"
    detail: str = ""
    secure: bool = False           # also ran through the secure engine

    @property
    def failed(self) -> bool:
        return self.outcome == "FAILED"


def judge(q: Query, world: World, federation, oracle_con, secure=None) -> Verdict:
    """Refused before any party works, or the oracle (and the secure engine) equal the expectation."""
    sql, params = q.render()
    try:
        want = expected(q, world)
        expect_refusal = None
    except ExpectedRefusal as exc:
        want, expect_refusal = None, " or ".join(exc.args)
    except duckdb.Error as exc:        # the data itself fails (e.g. a division by zero)
        want, expect_refusal = None, f"EvaluationError ({str(exc).splitlines()[0][:100]})"
    try:
        driver_sql, refusal = plan_outcome(sql, params, federation)
    except Exception as exc:  # noqa: BLE001 - anything but a ProgrammingError before the parties is a failure
        return Verdict("FAILED", f"planning raised {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    if refusal is not None:
        name = type(refusal).__name__
        if name == "EmptyGridError" and "EmptyGridError" not in (expect_refusal or ""):
            return Verdict("FAILED", f"EmptyGridError, but the grid has cells: {refusal}")
        return Verdict(f"refused: {name}", str(refusal).splitlines()[0])
    if expect_refusal is not None and not expect_refusal.startswith("EvaluationError"):
        return Verdict("FAILED", f"planned, but the documented rules refuse it ({expect_refusal})")
    try:
        oracle = run_oracle(driver_sql, federation, oracle_con)
    except errors.EvaluationError as exc:
        if expect_refusal is not None:
            return Verdict("refused: EvaluationError", str(exc).splitlines()[0])
        return Verdict("FAILED", f"oracle: EvaluationError where the data does not fail: {exc}")
    except Exception as exc:  # noqa: BLE001
        return Verdict("FAILED", f"oracle raised {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    if want is None:
        return Verdict("FAILED", f"oracle answered, expected {expect_refusal}")
    diff = compare_expected(oracle, want, "oracle")
    if diff:
        return Verdict("FAILED", diff)
    if secure is None:
        return Verdict("agreed")
    try:
        got = secure.query(driver_sql)
    except Exception as exc:  # noqa: BLE001
        return Verdict("FAILED", f"secure engine raised {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                       True)
    if want.order == "exact":
        try:
            assert_same_result(got, oracle, driver_sql, rel_tol=REL_TOL)
        except AssertionError as exc:
            return Verdict("FAILED", f"secure differs from the oracle: {str(exc)[:400]}", True)
    diff = compare_expected(got, want, "secure")       # (near-ties of ordered aggregates may swap)
    if diff or got.columns != oracle.columns:
        return Verdict("FAILED", f"secure differs from the oracle: {diff or got.columns}", True)
    return Verdict("agreed", secure=True)


# ------------------------------------------------------------------ shrinking and running


def used_aliases(q: Query) -> set:
    exprs = [it.expr for it in q.items] + list(q.where) + ([q.having] if q.having is not None else [])
    return {alias for e in exprs for alias, _ in e.cols}


def smaller(q: Query):
    """Queries with one part fewer: a select item, a group (with its item), a WHERE conjunct,
    HAVING, ORDER BY, LIMIT, a join, the UNION ALL."""
    for i, it in enumerate(q.items):
        if len(q.items) == 1:
            break
        keep = [j for j in range(len(q.items)) if j != i]
        groups, remap = q.groups, {}
        if it.group is not None:
            groups = tuple(g for n, g in enumerate(q.groups) if n != it.group)
            remap = {n: n - (n > it.group) for n in range(len(q.groups)) if n != it.group}
        items = tuple(replace(q.items[j], group=None if q.items[j].group is None else remap.get(
            q.items[j].group, q.items[j].group)) for j in keep)
        order = tuple((keep.index(o[0]),) + o[1:] for o in q.order if o[0] != i)
        yield replace(q, items=items, groups=groups, order=order)
    for i in range(len(q.where)):
        yield replace(q, where=q.where[:i] + q.where[i + 1:])
    if q.having is not None:
        yield replace(q, having=None)
    if q.order:
        yield replace(q, order=())
    if q.limit is not None:
        yield replace(q, limit=None, offset=None)
    for s in q.sources[1:]:
        if s.alias not in used_aliases(q):
            yield replace(q, sources=tuple(x for x in q.sources if x is not s))
    if q.sources[0].union_where:
        yield replace(q, sources=(Source("t0", "h", "t"),) + q.sources[1:])
    if q.decor:
        yield replace(q, decor=0)


def shrink(q: Query, still_fails, budget: int = 80) -> Query:
    """Delete parts while ``still_fails(query)``; greedy, at most ``budget`` tries."""
    progress = True
    while progress and budget > 0:
        progress = False
        for candidate in smaller(q):
            budget -= 1
            if still_fails(candidate):
                q, progress = candidate, True
                break
            if budget <= 0:
                break
    return q


@dataclass
class Case:
    world: int
    query: Query
    verdict: Verdict


class Runner:
    """Generated cases over a sequence of worlds; the secure engine on a spread-out sample."""

    def __init__(self, directory: Path, seed: int, per_world: int = 50, report=print, shrink: bool = True):
        self.directory, self.seed, self.per_world, self.report = directory, seed, per_world, report
        self.shrink = shrink
        self.embedded: EmbeddedFederation | None = None
        self.cases: list[Case] = []

    def run(self, n: int, secure: int = 0) -> list[Case]:
        secure_done = 0
        try:
            for w in range((n + self.per_world - 1) // self.per_world):
                world = make_world(self.directory / f"world{w}", self.seed * 1000 + w)
                federation = load_federation(world.path)
                oracle_con = open_union_database(federation)
                if secure and self.embedded is None:
                    self.embedded = EmbeddedFederation(federation)
                elif self.embedded is not None:
                    self.embedded.reload(federation)
                gen = Generator(random.Random(f"{self.seed}/{w}"))
                for _ in range(min(self.per_world, n - len(self.cases))):
                    q = gen.query()
                    use = self.embedded if secure_done * n < secure * (len(self.cases) + 1) else None
                    v = self.judge(q, world, federation, oracle_con, use)
                    secure_done += v.secure
                    self.cases.append(Case(w, q, v))
                    if v.failed:
                        self.report_failure(q, v, world, federation, oracle_con, use)
        finally:
            if self.embedded is not None:
                self.embedded.close()
                self.embedded = None
        return self.cases

    def judge(self, q, world, federation, oracle_con, secure) -> Verdict:
        v = judge(q, world, federation, oracle_con, secure)
        if v.failed and v.secure and "raised" in v.detail:     # fresh parties after a crash
            self.embedded.close()
            self.embedded = EmbeddedFederation(federation)
        return v

    def report_failure(self, q, v, world, federation, oracle_con, secure):
        signature = v.detail.split(":")[0]

        def still_fails(candidate):
            got = self.judge(candidate, world, federation, oracle_con, secure)
            return got.failed and got.detail.split(":")[0] == signature

        small = shrink(q, still_fails, budget=40 if secure is not None else 80) if self.shrink else q
        sql, params = q.render()
        ssql, sparams = small.render()
        self.report(f"FAILURE (world {world.path.parent.name}: {world.describe()}): {v.detail}\n"
                    f"  query:  {sql}  params={params}\n  shrunk: {ssql}  params={sparams}")


def summary(cases: list[Case]) -> dict:
    counts = {"generated": len(cases), "agreed": sum(c.verdict.outcome == "agreed" for c in cases),
              "agreed (also secure)": sum(c.verdict.outcome == "agreed" and c.verdict.secure for c in cases),
              "failed": sum(c.verdict.failed for c in cases)}
    refused: dict = {}
    for c in cases:
        if c.verdict.outcome.startswith("refused"):
            name = c.verdict.outcome.split(": ")[1]
            refused[name] = refused.get(name, 0) + 1
    counts["refused"] = dict(sorted(refused.items(), key=lambda kv: -kv[1]))
    return counts


# ------------------------------------------------------------------ grammar coverage

STATEMENT_ONLY = {"explain", "show", "describe"}       # statements with no result to compare


def grammar_constructs() -> set:
    """Every rule, alias and terminal of grammar/sqlmpc.lark that can appear in a query's parse,
    and every name of the function registry (aggregates, scalar functions, CAST types, date parts)."""
    lark = _lark()
    names = set()
    for r in lark.rules:
        if r.alias is None and r.options.expand1 and len(r.expansion) == 1:
            continue                     # an inlined ?rule never shows up as a node
        if not str(r.origin.name).startswith("__"):       # lark's helpers for repetitions
            names.add(f"rule {r.alias or r.origin.name}")
    names |= {f"terminal {t.name}" for t in lark.terminals}
    names -= {f"rule {n}" for n in STATEMENT_ONLY}
    names -= {f"terminal {t.name}" for t in lark.terminals if t.pattern.value in STATEMENT_ONLY}
    names |= {f"function {n}" for n in AGGREGATE_NAMES + SCALAR_NAMES}
    names |= {f"type {n}" for n in CAST_TYPES} | {f"date part {n}" for n in DATE_PARTS}
    return names


def constructs_of(sql: str) -> set:
    lark = _lark()
    seen = {f"terminal {t.type}" for t in lark.lex(sql, dont_ignore=True)}

    def walk(tree):
        seen.add(f"rule {tree.data}")
        first = tree.children[0] if tree.children else None
        if tree.data in ("function", "function_star", "function_distinct") and isinstance(first, Token):
            seen.add(f"function {first.upper()}")
            if first.upper() == "DATE_PART":
                seen.add(f"date part {sql[tree.meta.start_pos:tree.meta.end_pos].split(chr(39))[1].upper()}")
        if tree.data == "type_name":
            seen.add(f"type {first.upper()}")
        if tree.data == "extract":
            seen.add(f"date part {first.upper()}")
        for c in tree.children:
            if isinstance(c, Tree):
                walk(c)

    walk(lark.parse(sql))
    return seen


def missing_constructs(sqls) -> set:
    """The grammar's and registry's constructs that none of ``sqls`` produces."""
    seen = set()
    for sql in sqls:
        seen |= constructs_of(sql)
    return grammar_constructs() - seen
