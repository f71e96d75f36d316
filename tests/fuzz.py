"""Fuzzing the dialect: every input ends in a result or an sqlmpc error, within 10 s.

Inputs come from four generators: random sequences of the grammar's own terminals,
mutations of the saved queries (queries/*.sql), well-formed queries generated over the
demo catalog (every function and aggregate, arithmetic over aggregates, CASE and
WIDTH_BUCKET binning, FILTER, HAVING, joins, UNION ALL, ORDER BY/LIMIT, parameters,
literals inside and outside the domains), and fixed edge cases (limits, bad Unicode).
Each input runs the driver's path up to planning (parse, parameters, bind, type check,
cell grid, plan: pure Python and DuckDB on public values); a sample also runs through
the plaintext oracle.  An input *fails* when it ends in anything but a result or a
:class:`sqlmpc.errors.Error` that is not an InternalError, or takes longer than 10 s.

Bench mode (prints counts and a shrunk reproduction of every failure):

    python tests/fuzz.py --n 1000 --seed 1 [--oracle 100] [--secure 50]

``--secure N`` also runs N planned generated queries through the embedded 3-party
federation and compares each with the oracle (failures there are the engine's).
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from compare import assert_same_result
from sqlmpc import errors
from sqlmpc.catalog import Federation, Role, load_federation
from sqlmpc.demo import generate
from sqlmpc.local.data import open_union_database
from sqlmpc.oracle import run_oracle
from sqlmpc.party.embedded import EmbeddedFederation
from sqlmpc.plan.compile import compile
from sqlmpc.sql import Explain, Query, parse
from sqlmpc.sql.functions import AGGREGATES
from sqlmpc.sql.limits import MAX_DEPTH, MAX_IN_ITEMS, MAX_SELECT_ITEMS, MAX_STATEMENT_CHARS
from sqlmpc.sql.params import bind_parameters
from sqlmpc.sql.grammar import keywords

ONE_ARGUMENT = [a.name for a in AGGREGATES.values() if a.arity == 1 and a.name != "COUNT"]
TWO_ARGUMENTS = [a.name for a in AGGREGATES.values() if a.arity == 2]

ROOT = Path(__file__).resolve().parent.parent
SAVED = sorted((ROOT / "queries").glob("*.sql"))
TIME_LIMIT = 10.0            # seconds an input may take
HARD_STOP = 30.0             # an input still running then is stopped (and fails)

TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\d+\.?\d*(?:e[+-]?\d+)?|\w+|"
                   r"<>|!=|<=|>=|\|\||\S", re.S | re.I)
ODD_TEXT = ["\ud800", "\x00", "\ufeff", "\u202e", "é", "😀", "\t", "\r\n", "\x0c", "\u3000", "ß", "İ"]
EDGE_NUMBERS = ["0", "-1", "2147483648", "9223372036854775808", "99999999999999999999999999999999999999999",
                "1e308", "1e999", "0.0000000001", ".5", "1e-400", "-0"]
EDGE_STRINGS = ["''", "'Atlantis'", "'North'", "'it''s'", "'%'", "'\ud800'", "'a\x00b'", "'" + "x" * 5000 + "'"]


# ---------------------------------------------------------------- the pipeline


def run_input(sql: str, federation: Federation, params=None, *, oracle_con=None) -> str:
    """Run ``sql`` as the driver would, up to a plan (and through the oracle if ``oracle_con``).

    Returns "ok" or the name of the sqlmpc error; anything else propagates.
    """
    try:
        statement = parse(sql)
        if isinstance(statement, Explain):               # as EXPLAIN does: plan the query, parameters unbound
            compile(statement.query, federation)
            return "ok"
        if not isinstance(statement, Query):
            return "ok"                                   # SHOW / DESCRIBE: metadata, no planning
        compile(statement, federation, params)            # as the driver: parse once, parameters into the tree
        if oracle_con is not None:
            run_oracle(statement, federation, oracle_con, params)
        return "ok"
    except errors.InternalError:
        raise
    except errors.Error as err:
        return type(err).__name__


class _Stopped(BaseException):
    """Raised into an input that runs past HARD_STOP."""


def _alarm(signum, frame):
    raise _Stopped()


# Failures whose cause is known and lies outside the dialect's files, with where it is
# reported; they are counted apart, and tests/test_fuzz.py keeps a strict xfail for each.
KNOWN: dict[str, str] = {}


@dataclass
class Outcome:
    sql: str
    params: list | None
    kind: str            # generator name
    result: str          # "ok", an error class name, or "FAIL: ..."
    seconds: float

    @property
    def known(self) -> str | None:
        return KNOWN.get(self.result) if self.seconds <= TIME_LIMIT else None

    @property
    def failed(self) -> bool:
        return (self.result.startswith("FAIL") or self.seconds > TIME_LIMIT) and self.known is None


def judge(sql: str, params, kind: str, federation: Federation, oracle_con=None) -> Outcome:
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, HARD_STOP)
    start = time.perf_counter()
    try:
        result = run_input(sql, federation, params, oracle_con=oracle_con)
    except _Stopped:
        result = f"FAIL: still running after {HARD_STOP:.0f} s"
    except BaseException as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        if isinstance(exc, KeyboardInterrupt):
            raise
        result = f"FAIL: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return Outcome(sql, params, kind, result, time.perf_counter() - start)


# ---------------------------------------------------------------- generators


class Generator:
    """Inputs for one federation (the demo's catalog supplies names and values)."""

    def __init__(self, federation: Federation, rng: random.Random):
        self.fed = federation
        self.rng = rng
        self.tables = list(federation.tables)
        self.keywords = keywords()
        names = {t.party for t in self.tables} | {t.name for t in self.tables}
        names |= {c.name for t in self.tables for c in t.columns}
        names |= {n.lower() for n in ["COUNT", "SUM", "AVG", "ROUND", "WIDTH_BUCKET", "YEAR", "DATE", "right"]}
        self.names = sorted(names)
        self.strings = sorted({f"'{v}'" for t in self.tables for c in t.columns for v in (c.domain or ())
                               if isinstance(v, str)}) + EDGE_STRINGS
        self.saved = [p.read_text() for p in SAVED]

    # -- random terminals of the grammar

    def token(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(self.keywords)
        if r < 0.75:
            return self.rng.choice(self.names)
        if r < 0.87:
            return self.rng.choice(self.strings)
        return self.rng.choice(EDGE_NUMBERS + [str(self.rng.randint(0, 3000))])

    def random_tokens(self) -> str:
        tokens = [self.token() for _ in range(self.rng.randint(1, 30))]
        if self.rng.random() < 0.6:
            tokens.insert(0, "SELECT")
        return " ".join(tokens)

    # -- mutations of the saved queries

    def mutate(self, sql: str | None = None) -> str:
        tokens = TOKEN.findall(sql or self.rng.choice(self.saved))
        for _ in range(self.rng.randint(1, 3)):
            if not tokens:
                break
            i = self.rng.randrange(len(tokens))
            op = self.rng.randrange(8)
            if op == 0:
                del tokens[i]
            elif op == 1:
                tokens.insert(i, tokens[i])
            elif op == 2:
                j = self.rng.randrange(len(tokens))
                tokens[i], tokens[j] = tokens[j], tokens[i]
            elif op == 3:
                tokens[i] = self.token()
            elif op == 4:
                literals = [k for k, t in enumerate(tokens) if t[:1] in "'0123456789"]
                if literals:
                    tokens[self.rng.choice(literals)] = self.rng.choice(EDGE_NUMBERS + EDGE_STRINGS)
            elif op == 5:
                tokens = tokens[:i]
            elif op == 6:
                tokens.insert(i, self.rng.choice(ODD_TEXT))
            else:
                tokens[i:i] = ["(", *tokens[i:i + 3], ")"]
        return " ".join(tokens)

    # -- well-formed queries over the catalog

    def column(self, table, alias, role) -> str | None:
        cols = [c for c in table.columns if c.role is role]
        return f"{alias}.{self.rng.choice(cols).name}" if cols else None

    def predicate(self, table, alias) -> str:
        rng = self.rng
        dims = [c for c in table.columns if c.role is Role.DIMENSION]
        measures = [c for c in table.columns if c.role is Role.MEASURE]
        if dims and (rng.random() < 0.6 or not measures):
            c = rng.choice(dims)
            value = rng.choice(list(c.domain))
            outside = "'Atlantis'" if isinstance(value, str) else "1999"
            lit = (f"'{value}'" if isinstance(value, str) else str(value)) if rng.random() < 0.85 else outside
            col = f"{alias}.{c.name}"
            text = f"CAST({col} AS VARCHAR)"
            return rng.choice([f"{col} = {lit}", f"{col} <> {lit}", f"{col} IN ({lit}, {lit})",
                               f"NOT {col} = {lit}", f"{col} IS NOT NULL", f"{col} = ?",
                               f"{text} LIKE '%1%'", f"{text} || '-' = {lit} || '-'",
                               f"COALESCE({col}, {lit}) = {lit}", f"{alias}.pid IS NULL",
                               f"CASE WHEN {col} = {lit} THEN TRUE ELSE FALSE END",
                               f"YEAR(DATE '2024-03-01') = 2024 AND {col} IS NOT NULL",
                               f"EXTRACT(MONTH FROM DATE '2024-03-01') = 3 OR {col} = {lit}"])
        c = rng.choice(measures)
        lo, hi = c.range
        x = rng.choice([lo, hi, (lo + hi) / 2, hi * 2, -1])
        col = f"{alias}.{c.name}"
        return rng.choice([f"{col} > {x}", f"{col} BETWEEN {lo} AND {x}", f"ROUND({col}) <= {x}",
                           f"ABS({col} - {x}) < {hi}", f"COALESCE({col}, 0) >= ?", f"{col} / 2 + 1 > {x}",
                           f"LEAST({col}, {x}) = {x}", f"GREATEST({col}, 0, {lo}) < {hi}",
                           f"CAST({col} AS INTEGER) % 7 = 0", f"{col} NOT BETWEEN {lo} AND {hi}",
                           f"ROUND({col}, 1) * 10 > {x}", f"-{col} < 0"])

    def aggregate(self, tables) -> str:
        rng = self.rng
        table, alias = rng.choice(tables)
        m = self.column(table, alias, Role.MEASURE)
        key = self.column(table, alias, Role.KEY)
        if m is None:
            return rng.choice(["COUNT(*)", f"COUNT(DISTINCT {key})"])
        fn1 = rng.choice(ONE_ARGUMENT)
        others = [self.column(t, a, Role.MEASURE) for t, a in tables]
        m2 = rng.choice([o for o in others if o] or [m])
        base = rng.choice([f"{fn1}({m})", f"{rng.choice(TWO_ARGUMENTS)}({m}, {m2})", "COUNT(*)",
                           f"COUNT(DISTINCT {key})", f"SUM({m}) FILTER (WHERE {self.predicate(table, alias)})",
                           f"SUM(CASE WHEN {m} > 10 THEN {m} ELSE 0 END)", f"AVG({m} * 2 + 1)"])
        if rng.random() < 0.3:       # arithmetic over aggregate outputs
            other = rng.choice([f"AVG({m})", "COUNT(*)", f"STDDEV_SAMP({m})", "100", "0"])
            base = f"{base} {rng.choice(['+', '-', '*', '/'])} {other}"
        return base

    def generated(self) -> tuple[str, list | None]:
        rng = self.rng
        by_party = collections.defaultdict(list)
        for t in self.tables:
            by_party[t.party].append(t)
        parties = rng.sample(sorted(by_party), rng.randint(1, min(3, len(by_party))))
        tables = [(rng.choice(by_party[p]), f"t{i}") for i, p in enumerate(parties)]
        root, ralias = tables[0]
        source = f"{root.party}.{root.name} {ralias}"
        if rng.random() < 0.15 and len(tables) == 1:
            horizontal = [t for t in self.tables if t.name in ("medication", "pharmacy")]
            if len(horizontal) == 2:
                root = horizontal[0]
                branches = " UNION ALL ".join(f"SELECT pid, year, drug_class, ddd FROM {t.party}.{t.name}"
                                              for t in horizontal)
                source = f"({branches}) {ralias}"
                tables = [(root, ralias)]
        joins = "".join(f" {rng.choice(['JOIN', 'LEFT JOIN'])} {t.party}.{t.name} {a} ON {a}.pid = {ralias}.pid"
                        for t, a in tables[1:])
        groups = []
        for t, a in tables:
            if rng.random() < 0.5:
                d = self.column(t, a, Role.DIMENSION)
                if d:
                    groups.append(d)
            elif rng.random() < 0.15:
                m = self.column(t, a, Role.MEASURE)
                if m:
                    groups.append(rng.choice([f"WIDTH_BUCKET({m}, 0, 100, 4)",
                                              f"CASE WHEN {m} < 50 THEN 'low' ELSE 'high' END"]))
        groups = list(dict.fromkeys(groups))
        items = groups + [self.aggregate(tables) for _ in range(rng.randint(1, 3))]
        sql = f"SELECT {', '.join(items)} FROM {source}{joins}"
        conds = [self.predicate(t, a) for t, a in tables if rng.random() < 0.6]
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        if groups:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(groups)))
        if rng.random() < 0.2:
            sql += f" HAVING COUNT(*) > {rng.choice([0, 10, 1000])}"
        if rng.random() < 0.3:
            sql += f" ORDER BY {rng.randint(1, len(items))} {rng.choice(['ASC', 'DESC'])}"
        if rng.random() < 0.2:
            sql += f" LIMIT {rng.randint(0, 5)}"
        params = [rng.choice(["North", "Atlantis", 3, 2024, 1.5, None, "\ud800"]) for _ in range(sql.count("?"))]
        return sql, params or None


def edge_cases() -> list[str]:
    base = "SELECT COUNT(*) FROM insurer.claims c WHERE "
    return [
        "", ";", ";;", "   ", "--", "/*", "/* x */", "SELECT", "SELECT COUNT(*) FROM", "\ufeffSELECT 1",
        "SELECT COUNT(*) FROM insurer.claims c;", "SHOW TABLES", "SHOW POLICY", "DESCRIBE insurer.claims",
        "EXPLAIN SELECT COUNT(*) FROM insurer.claims c", "DESCRIBE nowhere.t", "SHOW everything",
        "EXPLAIN SELECT c.category, COUNT(*) FROM insurer.claims c WHERE c.year = ? GROUP BY 1",
        base + "(" * (MAX_DEPTH - 1) + "c.year = 2024" + ")" * (MAX_DEPTH - 1),
        base + "(" * 500 + "c.year = 2024" + ")" * 500,
        base + "NOT " * 500 + "c.year = 2024",
        base + " AND ".join(["c.year = 2024"] * 2000),
        base + " OR ".join(["c.year = 2024"] * 2000),
        "SELECT SUM(" + " + ".join(["c.cost_eur"] * 500) + ") FROM insurer.claims c",
        "SELECT SUM(" + "(c.cost_eur + " * 500 + "1" + ")" * 500 + ") FROM insurer.claims c",
        "SELECT COUNT(*) FROM bureau.persons b WHERE b.region IN ("
        + ", ".join(f"'r{i}'" for i in range(MAX_IN_ITEMS * 20)) + ")",
        "SELECT " + ", ".join(f"COUNT(*) AS n{i}" for i in range(MAX_SELECT_ITEMS * 5)) + " FROM insurer.claims c",
        base + "c.year IN (" + ",".join("1" for _ in range(MAX_STATEMENT_CHARS // 2 - 60)) + ")",
        base + "c.category = '" + "x" * MAX_STATEMENT_CHARS + "'",
        base + "c.category = '\ud800'", base + "c.category = 'a\x00b'", base + "c.category = '😀'",
        base + "c.category = 'Atlantis'", base + "c.year = 99999999999999999999999999999999999999999",
        base + "c.cost_eur > 1e999", base + "c.year = 1e-400",
        "SELECT c.category, COUNT(*) FROM insurer.claims c WHERE c.category = 'Atlantis' GROUP BY c.category",
        "SELECT STDDEV_SAMP(c.cost_eur) / AVG(c.cost_eur) AS cv FROM insurer.claims c",
        "SELECT AVG(c.cost_eur) / STDDEV_SAMP(c.cost_eur) AS x FROM insurer.claims c",
        "SELECT STDDEV_POP(c.cost_eur) * 2 AS x FROM insurer.claims c",
        "SELECT WIDTH_BUCKET(c.cost_eur, 0, 1000, 100) AS b, COUNT(*) FROM insurer.claims c GROUP BY 1",
        "SELECT COUNT(*) FROM insurer.claims c LIMIT 99999999999999999999",
        "SELECT COUNT(*) FROM insurer.claims c ORDER BY 'x'",
        "SELECT c.category, COUNT(*) FROM insurer.claims c GROUP BY c.category ORDER BY NULL",
        'SELECT COUNT(*) FROM insurer.claims "' + "c" * 300 + '"',
        "SELECT COUNT(*) FROM insurer.claims c\x00", "SELECT\tCOUNT(*)\rFROM\x0cinsurer.claims c",
        "SELECT COUNT(*) FROM insurer.claims c WHERE c.year = ?",
        "select count(*) from insurer.claims c where c.year in (2020, -2021, ?)",
        "SELECT COUNT(*) FROM insurer.claims c UNION ALL SELECT COUNT(*) FROM insurer.claims c",
    ]


# ---------------------------------------------------------------- running


def inputs(federation: Federation, n: int, seed: int) -> list[tuple[str, str, list | None]]:
    """``n`` inputs: the edge cases, then a seeded mix of the three random generators."""
    rng = random.Random(seed)
    gen = Generator(federation, rng)
    out = [("edge", sql, None) for sql in edge_cases()][:n]
    kinds = ["tokens", "mutation", "generated"]
    while len(out) < n:
        kind = kinds[len(out) % 3]
        if kind == "tokens":
            out.append((kind, gen.random_tokens(), None))
        elif kind == "mutation":
            out.append((kind, gen.mutate(), None))
        else:
            sql, params = gen.generated()
            out.append((kind, sql, params))
    return out


def shrink(sql: str, params, federation: Federation, result: str, budget: int = 150) -> str:
    """A shorter input that fails the same way (greedy token deletion)."""
    tokens = TOKEN.findall(sql)
    if len(tokens) > 400:
        return sql[:300] + f"... ({len(sql):,} characters)"
    signature = result.split(":")[0:2]
    i = 0
    while i < len(tokens) and budget > 0:
        candidate = tokens[:i] + tokens[i + 1:]
        budget -= 1
        text = " ".join(candidate)
        count = text.count("?")
        got = judge(text, (params or [None] * count)[:count] or None, "shrink", federation)
        if got.failed and got.result.split(":")[0:2] == signature:
            tokens = candidate
        else:
            i += 1
    return " ".join(tokens)


def run(federation: Federation, n: int, seed: int, oracle: int = 0, oracle_con=None,
        report=print) -> list[Outcome]:
    outcomes = []
    generated_seen = 0
    for kind, sql, params in inputs(federation, n, seed):
        con = None
        if kind == "generated" and generated_seen < oracle:
            con = oracle_con
            generated_seen += 1
        outcome = judge(sql, params, kind + ("+oracle" if con is not None else ""), federation, con)
        outcomes.append(outcome)
        if outcome.failed:
            report(f"FAILURE ({outcome.kind}, {outcome.seconds:.1f} s): {outcome.result}\n"
                   f"  input:  {outcome.sql[:500]!r} params={outcome.params!r}\n"
                   f"  shrunk: {shrink(outcome.sql, outcome.params, federation, outcome.result)[:500]!r}")
    return outcomes


def driver_sql(sql: str, params) -> str:
    """The text the driver runs: parameters bound as literals into the parsed tree, rendered again."""
    statement = parse(sql)
    tree = bind_parameters(statement.tree, params)
    return sql if tree is statement.tree else tree.sql("duckdb")


def run_secure(outcomes: list[Outcome], federation: Federation, oracle_con, n: int, report=print) -> dict:
    """Run up to ``n`` planned generated inputs through the embedded federation; compare with the oracle."""
    counts = collections.Counter()
    chosen = [o for o in outcomes if o.kind.startswith("generated") and o.result == "ok"][:n]
    embedded = EmbeddedFederation(federation)
    try:
        for o in chosen:
            sql = driver_sql(o.sql, o.params)
            start = time.perf_counter()
            try:
                expected = run_oracle(sql, federation, oracle_con)
                got = embedded.query(sql)
                assert_same_result(got, expected, sql)
                counts["equal"] += 1
                continue
            except AssertionError as exc:
                what = f"differs from the oracle: {str(exc)[:300]}"
            except errors.ProgrammingError as exc:   # refused by the engine's own checks: not a crash
                counts[f"refused: {type(exc).__name__}"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - what the secure run fails with
                what = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                embedded.close()
                embedded = EmbeddedFederation(federation)     # fresh parties for the next input
            counts["FAIL"] += 1
            report(f"SECURE FAILURE ({time.perf_counter() - start:.1f} s): {what}\n  input: {sql!r}")
    finally:
        embedded.close()
    return counts


def summary(outcomes: list[Outcome]) -> str:
    by_kind = collections.Counter(o.kind for o in outcomes)
    results = collections.Counter("FAIL" if o.failed else "known bug" if o.known else o.result for o in outcomes)
    slowest = max(outcomes, key=lambda o: o.seconds)
    lines = [f"{len(outcomes)} inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())),
             "outcomes: " + ", ".join(f"{k} {v}" for k, v in results.most_common()),
             f"failures: {results.get('FAIL', 0)}; known bugs elsewhere: {results.get('known bug', 0)}; slowest {slowest.seconds:.2f} s ({slowest.kind}); "
             f"total {sum(o.seconds for o in outcomes):.1f} s"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of inputs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--oracle", type=int, default=100, help="generated inputs also run through the oracle")
    parser.add_argument("--secure", type=int, default=0,
                        help="planned generated inputs also run through the embedded federation, against the oracle")
    parser.add_argument("--persons", type=int, default=2000, help="size of the demo federation")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        federation = load_federation(generate(Path(tmp), persons=args.persons))
        con = open_union_database(federation) if args.oracle or args.secure else None
        outcomes = run(federation, args.n, args.seed, args.oracle, con)
        secure = run_secure(outcomes, federation, con, args.secure) if args.secure else None
    print(f"seed {args.seed}, oracle on {min(args.oracle, sum(o.kind.startswith('generated') for o in outcomes))} "
          f"generated inputs")
    print(summary(outcomes))
    if secure is not None:
        print("secure vs oracle: " + ", ".join(f"{k} {v}" for k, v in secure.most_common()))
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
