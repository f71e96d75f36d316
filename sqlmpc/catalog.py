"""Federation catalog: parties, their tables and columns, roles and policy (TOML).

This module holds the typed values every other layer uses.  The loader
(``load_federation``) validates the file and reports each mistake with its
file, line and TOML key path.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlmpc.errors import ConfigError
from sqlmpc.plan.perturbation import CellKeyPolicy, validate as validate_cell_key


class Role(enum.Enum):
    KEY = "key"              # join equality / COUNT(DISTINCT) only
    DIMENSION = "dimension"  # GROUP BY, WHERE; has a public domain
    MEASURE = "measure"      # aggregates, WHERE; has a declared range
    ATTRIBUTE = "attribute"  # local WHERE at its owner only


@dataclass(frozen=True)
class Column:
    name: str
    type: str                                   # DuckDB type name: INTEGER, BIGINT, DOUBLE, VARCHAR, DATE, BOOLEAN
    role: Role
    domain: tuple | None = None                 # dimension: the public list of values
    range: tuple[float, float] | None = None    # measure: [lo, hi] inclusive
    scale: int = 0                              # measure: decimal digits kept in fixed point
    key_space: str | None = None                # key: e.g. "pseudonym"
    unique: bool = False                        # key: at most one row per key value
    nullable: bool = True                       # keys are never nullable


@dataclass(frozen=True)
class Table:
    party: str
    name: str
    source: Path | None                         # absolute path of the data file (None: in a database)
    format: str                                 # "parquet" | "csv" | "duckdb" | "postgresql" | "spark"
    columns: tuple[Column, ...]
    source_table: str | None = None             # the table inside a .duckdb file, PostgreSQL or Spark

    @property
    def kind(self) -> str:
        """Where the rows live: "file" (read by the party's DuckDB), "postgresql" or "spark"."""
        return self.format if self.format in SOURCE_KINDS else "file"

    @property
    def qualified_name(self) -> str:
        return f"{self.party}.{self.name}"

    def column(self, name: str) -> Column | None:
        lname = name.lower()
        return next((c for c in self.columns if c.name.lower() == lname), None)

    @property
    def key(self) -> Column | None:
        return next((c for c in self.columns if c.role is Role.KEY), None)


@dataclass(frozen=True)
class Connection:
    """How a party reaches its database (sqlmpc.local.sources); never a password itself.

    ``postgresql``: a libpq URI or DSN without password (``dsn``, or the environment variable
    ``dsn_env`` that holds it); the password from the environment variable ``password_env`` or
    the file ``password_file``.  ``spark``: the ``master`` URL and extra ``conf`` settings.
    """

    kind: str                                   # "postgresql" | "spark"
    dsn: str | None = None
    dsn_env: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    master: str = "local[*]"
    conf: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Party:
    name: str
    address: str                                # "host:port" of the party's control endpoint
    tables: tuple[Table, ...] = ()
    connections: tuple[Connection, ...] = ()    # one per database kind its tables use

    def connection(self, kind: str) -> Connection | None:
        return next((c for c in self.connections if c.kind == kind), None)

    def table(self, name: str) -> Table | None:
        lname = name.lower()
        return next((t for t in self.tables if t.name.lower() == lname), None)


@dataclass(frozen=True)
class Dominance:
    """A dominance rule on the persons' contributions to a sum.

    ``kind = "n-largest"``: (n, p) rule, a cell is suppressed if its n largest contributions
    make up more than p % of its sum.  ``kind = "p-percent"``: p % rule, suppressed if the sum
    less the two largest contributions is below p % of the largest (the second largest
    contributor could estimate the largest too closely).
    """

    n: int
    percent: float
    kind: str = "n-largest"


@dataclass(frozen=True)
class Policy:
    min_cell_size: int = 10
    joins: frozenset[frozenset[str]] | None = None   # allowed party pairs; None = every pair
    dominance: Dominance | None = None
    analysts: frozenset[str] | None = None           # who may ask; None = anyone authenticated
    perturbation: str = "none"                       # "cell_key" (docs/disclosure.md) or "none": exact release
    cell_key: CellKeyPolicy = field(default_factory=CellKeyPolicy)
    approved_plans: frozenset[str] = frozenset()     # plan hashes released exactly (all release rules apply)

    def may_join(self, a: str, b: str) -> bool:
        return a == b or self.joins is None or frozenset((a, b)) in self.joins


@dataclass(frozen=True)
class Federation:
    name: str
    parties: tuple[Party, ...]
    policy: Policy = field(default_factory=Policy)
    insecure_demo: bool = False
    path: Path | None = field(default=None, compare=False)
    fingerprint: str = ""                            # sha256 of the canonical catalog content

    def party(self, name: str) -> Party | None:
        lname = name.lower()
        return next((p for p in self.parties if p.name.lower() == lname), None)

    def table(self, party: str, name: str) -> Table | None:
        p = self.party(party)
        return p.table(name) if p else None

    @property
    def tables(self) -> tuple[Table, ...]:
        return tuple(t for p in self.parties for t in p.tables)

    @property
    def party_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parties)


# --------------------------------------------------------------------------
# Loading and validating the federation file (TOML)

COLUMN_TYPES = ("INTEGER", "BIGINT", "SMALLINT", "DOUBLE", "VARCHAR", "DATE", "BOOLEAN")
NUMERIC_TYPES = ("INTEGER", "BIGINT", "SMALLINT", "DOUBLE")
SOURCE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".duckdb": "duckdb"}
SOURCE_KINDS = ("postgresql", "spark")           # databases the party's local SQL is pushed down to
MIN_SECURE_PARTIES = 3
# Party names become DuckDB schema names; these are taken by DuckDB itself.
RESERVED_PARTY_NAMES = frozenset({"main", "temp", "system", "memory", "information_schema", "pg_catalog"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


class _TomlText:
    """The text of one TOML file: turns a key path into an error with a line number."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text

    def line_of(self, keypath: tuple[str, ...]) -> int | None:
        """The line of the deepest component of ``keypath`` found in order in the text.

        A scan, not a parser: each key is searched after the previous one, which
        finds ``[a.b]`` headers, dotted keys and inline tables alike.
        """
        pos, line = 0, None
        for key in keypath:
            pattern = rf'(?<![\w-])(?:"{re.escape(key)}"|\'{re.escape(key)}\'|{re.escape(key)})(?=\s*[=.\]])'
            match = re.compile(pattern, re.MULTILINE).search(self.text, pos)
            if match is None:
                break
            pos = match.end()
            line = self.text.count("\n", 0, match.start()) + 1
        return line

    def error(self, message: str, keypath: tuple[str, ...], *, missing: bool = False) -> ConfigError:
        """``missing``: the last key is absent, so point at the line of the table that should hold it."""
        return ConfigError(message, path=str(self.path), location=".".join(keypath) or None,
                           line=self.line_of(keypath[:-1] if missing else keypath))


def _read_toml(path: Path) -> tuple[dict, _TomlText]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the federation file: {exc.strerror or exc}", path=str(path)) from None
    try:
        return tomllib.loads(text), _TomlText(path, text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        line = int(found.group(1)) if found else None
        raise ConfigError(f"TOML syntax error: {message}", path=str(path), line=line) from None


class _Node:
    """One TOML table being read, with its key path, so every mistake points at its place."""

    def __init__(self, source: _TomlText, value: object, keypath: tuple[str, ...]):
        self.source = source
        self.keypath = keypath
        if not isinstance(value, dict):
            raise self.error(f"expected a table, found {_describe(value)}")
        self.value: dict = value

    def error(self, message: str, key: str | None = None, *, missing: bool = False) -> ConfigError:
        return self.source.error(message, self.keypath + ((key,) if key is not None else ()), missing=missing)

    def allow(self, keys: Iterable[str]) -> None:
        keys = tuple(keys)
        for key in self.value:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(keys)})"
                raise self.error(f"unknown key '{key}'{hint}", key)

    def has(self, key: str) -> bool:
        return key in self.value

    def require(self, key: str, kind: type | tuple[type, ...], what: str) -> object:
        if key not in self.value:
            raise self.error(f"missing required key '{key}' ({what})", key, missing=True)
        return self.get(key, kind, what)

    def get(self, key: str, kind: type | tuple[type, ...], what: str, default: object = None) -> object:
        if key not in self.value:
            return default
        value = self.value[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a TOML `true` must not pass for a number.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(f"'{key}' must be {what}, found {_describe(value)}", key)
        return value

    def child(self, key: str) -> _Node:
        return _Node(self.source, self.value[key], self.keypath + (key,))

    def children(self) -> Iterable[tuple[str, _Node]]:
        for key in self.value:
            yield key, self.child(key)


def _describe(value: object) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)
    return f"{kind} ({value!r})" if not isinstance(value, (dict, list)) else kind


def _check_name(node: _Node, name: str, what: str) -> None:
    if not _IDENTIFIER.match(name):
        raise node.error(f"{what} name '{name}' must be a plain SQL identifier (letters, digits, _)")


def _find_duplicate(names: Iterable[str]) -> str | None:
    """SQL names are case-insensitive: 'pid' and 'PID' would be the same column."""
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            return name
        seen.add(name.lower())
    return None


# -- columns ------------------------------------------------------------------

_COLUMN_KEYS = ("type", "role", "domain", "range", "scale", "key_space", "unique", "nullable", "description")
_KEYS_OF_ROLE = {Role.KEY: ("key_space", "unique"), Role.DIMENSION: ("domain",),
                 Role.MEASURE: ("range", "scale"), Role.ATTRIBUTE: ()}
_ROLE_SPECIFIC = frozenset(k for keys in _KEYS_OF_ROLE.values() for k in keys)


def _column(node: _Node, name: str) -> Column:
    _check_name(node, name, "column")
    node.allow(_COLUMN_KEYS)
    type_ = str(node.require("type", str, "a DuckDB type name")).upper()
    if type_ not in COLUMN_TYPES:
        close = difflib.get_close_matches(type_, COLUMN_TYPES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(COLUMN_TYPES)})"
        raise node.error(f"unknown type '{node.value['type']}'{hint}", "type")
    role_text = node.require("role", str, "one of key, dimension, measure, attribute")
    try:
        role = Role(role_text)
    except ValueError:
        roles = [r.value for r in Role]
        close = difflib.get_close_matches(role_text, roles, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(roles)})"
        raise node.error(f"unknown role '{role_text}'{hint}", "role") from None
    for key in _ROLE_SPECIFIC - set(_KEYS_OF_ROLE[role]):
        if node.has(key):
            article = "an" if role.value[0] in "aeiou" else "a"
            raise node.error(f"'{key}' does not apply to {article} {role.value} column", key)
    nullable = node.get("nullable", bool, "true or false", default=role is not Role.KEY)
    if role is Role.KEY:
        return _key_column(node, name, type_, nullable)
    if role is Role.DIMENSION:
        return Column(name, type_, role, domain=_domain(node, type_), nullable=nullable)
    if role is Role.MEASURE:
        return _measure_column(node, name, type_, nullable)
    return Column(name, type_, role, nullable=nullable)


def _key_column(node: _Node, name: str, type_: str, nullable: bool) -> Column:
    if nullable:
        raise node.error("a key column cannot be nullable: rows without a key cannot be joined or counted",
                         "nullable")
    key_space = node.require("key_space", str, "the name of the key space, e.g. \"pseudonym\"")
    if not key_space:
        raise node.error("'key_space' must not be empty", "key_space")
    unique = node.get("unique", bool, "true or false", default=False)
    return Column(name, type_, Role.KEY, key_space=key_space, unique=unique, nullable=False)


def _measure_column(node: _Node, name: str, type_: str, nullable: bool) -> Column:
    if type_ not in NUMERIC_TYPES:
        raise node.error(f"a measure must be numeric ({', '.join(NUMERIC_TYPES)}), not {type_}", "type")
    bounds = node.require("range", list, "[lo, hi]")
    if len(bounds) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
        raise node.error("'range' must be two numbers [lo, hi]", "range")
    lo, hi = bounds
    if lo > hi:
        raise node.error(f"'range' has lo > hi ({lo} > {hi})", "range")
    if type_ != "DOUBLE" and not all(isinstance(b, int) for b in bounds):
        raise node.error(f"the range of a {type_} measure must be integers", "range")
    scale = node.get("scale", int, "a number of decimal digits", default=0)
    if not 0 <= scale <= 9:
        raise node.error(f"'scale' must be between 0 and 9, not {scale}", "scale")
    if scale and type_ != "DOUBLE":
        raise node.error(f"'scale' applies to DOUBLE measures only; a {type_} has no decimals", "scale")
    return Column(name, type_, Role.MEASURE, range=(lo, hi), scale=scale, nullable=nullable)


def _domain(node: _Node, type_: str) -> tuple:
    if not node.has("domain"):
        raise node.error("a dimension needs a public 'domain': a list of values or { from = a, to = b }",
                         "domain", missing=True)
    raw = node.value["domain"]
    if isinstance(raw, dict):
        bounds = node.child("domain")
        bounds.allow(("from", "to"))
        lo = bounds.require("from", int, "an integer")
        hi = bounds.require("to", int, "an integer")
        if lo > hi:
            raise node.error(f"'domain' has from > to ({lo} > {hi})", "domain")
        if type_ not in ("INTEGER", "BIGINT", "SMALLINT"):
            raise node.error(f"a {{ from, to }} domain needs an integer column, not {type_}", "domain")
        values = tuple(range(lo, hi + 1))
    elif isinstance(raw, list):
        values = tuple(raw)
    else:
        raise node.error(f"'domain' must be a list of values or {{ from = a, to = b }}, found {_describe(raw)}",
                         "domain")
    if not values:
        raise node.error("'domain' must not be empty", "domain")
    expected = {"VARCHAR": str, "BOOLEAN": bool}.get(type_, int if type_ != "DOUBLE" else (int, float))
    for value in values:
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise node.error(f"domain value {value!r} does not fit the column type {type_}", "domain")
    if len(set(values)) != len(values):
        raise node.error("'domain' lists a value twice", "domain")
    return values


# -- tables, parties, policy ---------------------------------------------------

def _table(node: _Node, party: str, name: str, base_dir: Path) -> Table:
    _check_name(node, name, "table")
    node.allow(("source", "table", "columns", "description"))
    source = str(node.require("source", str, "the data file, relative to the federation file, or "
                                             f"one of {', '.join(SOURCE_KINDS)}"))
    format_ = source if source in SOURCE_KINDS else SOURCE_FORMATS.get(Path(source).suffix.lower())
    if format_ is None:
        raise node.error(f"source '{source}' must end in {', '.join(SOURCE_FORMATS)} or be one of "
                         f"{', '.join(SOURCE_KINDS)}", "source")
    source_table = node.get("table", str, "the table's name inside its database")
    if format_ in ("duckdb", *SOURCE_KINDS) and not source_table:
        raise node.error(f"a {format_} source needs 'table': the name of the table inside it", "table",
                         missing=True)
    if format_ not in ("duckdb", *SOURCE_KINDS) and source_table is not None:
        raise node.error("'table' applies to .duckdb, postgresql and spark sources only", "table")
    if not node.has("columns"):
        raise node.error("missing required key 'columns' (the table's columns)", "columns", missing=True)
    columns_node = node.child("columns")
    columns = tuple(_column(col, col_name) for col_name, col in columns_node.children())
    duplicate = _find_duplicate(c.name for c in columns)
    if duplicate:
        raise columns_node.error(f"duplicate column name '{duplicate}' (names are case-insensitive)", duplicate)
    keys = [c.name for c in columns if c.role is Role.KEY]
    if len(keys) != 1:
        found = f"found {len(keys)}: {', '.join(keys)}" if keys else "found none"
        raise columns_node.error(f"a table must have exactly one key column ({found})")
    path = None if format_ in SOURCE_KINDS else (base_dir / source).resolve()
    return Table(party, name, path, format_, columns, source_table=source_table)


def _connection(node: _Node, kind: str) -> Connection:
    """A party's [parties.<name>.postgresql] or [parties.<name>.spark] table."""
    if kind == "spark":
        node.allow(("master", "conf"))
        master = str(node.get("master", str, 'a Spark master URL or "local[*]"', default="local[*]"))
        conf = node.child("conf").value if node.has("conf") else {}
        if not all(isinstance(v, (str, int, float, bool)) for v in conf.values()):
            raise node.error("'conf' must map Spark settings to plain values", "conf")
        return Connection("spark", master=master, conf=tuple(sorted((k, str(v)) for k, v in conf.items())))
    node.allow(("dsn", "dsn_env", "password_env", "password_file"))
    dsn = node.get("dsn", str, "a libpq URI or DSN without password")
    dsn_env = node.get("dsn_env", str, "the name of an environment variable holding the DSN")
    if (dsn is None) == (dsn_env is None):
        raise node.error("a postgresql connection needs exactly one of 'dsn' and 'dsn_env'", "dsn",
                         missing=dsn is None)
    if dsn is not None and re.search(r"password\s*=|://[^/@]*:[^/@]*@", dsn):
        raise node.error("the DSN holds a password: never write one into the federation file; use "
                         "'password_env' or 'password_file'", "dsn")
    return Connection("postgresql", dsn=dsn, dsn_env=dsn_env,
                      password_env=node.get("password_env", str, "the name of an environment variable"),
                      password_file=node.get("password_file", str, "the path of a file holding the password"))


def _address(node: _Node) -> str:
    address = str(node.require("address", str, '"host:port"'))
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    valid_host = bool(host) and (bracketed or re.fullmatch(r"[A-Za-z0-9.-]+", host) is not None)
    if not sep or not valid_host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise node.error(f"bad address '{address}': expected \"host:port\" with a port 1-65535", "address")
    return address


def _party(node: _Node, name: str, base_dir: Path) -> Party:
    _check_name(node, name, "party")
    if name.lower() in RESERVED_PARTY_NAMES:
        raise node.error(f"'{name}' is reserved by DuckDB and cannot name a party")
    node.allow(("address", "tables", "description", *SOURCE_KINDS))
    address = _address(node)
    connections = tuple(_connection(node.child(kind), kind) for kind in SOURCE_KINDS if node.has(kind))
    tables: tuple[Table, ...] = ()
    if node.has("tables"):
        tables_node = node.child("tables")
        tables = tuple(_table(t, name, t_name, base_dir) for t_name, t in tables_node.children())
        duplicate = _find_duplicate(t.name for t in tables)
        if duplicate:
            raise tables_node.error(f"duplicate table name '{duplicate}' (names are case-insensitive)", duplicate)
    # Connections are the owner's business: they are not in the fingerprint, and another
    # party's copy of the file may leave them out (sqlmpc.local.sources checks the owner's).
    return Party(name, address, tables, connections)


_POLICY_KEYS = ("min_cell_size", "joins", "dominance", "analysts", "perturbation", "cell_key", "approved_plans")
PERTURBATIONS = ("cell_key", "none")
_PLAN_HASH = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class _PolicyDraft:
    """The keys a [policy] table sets; None = not given (so a local policy can leave it)."""

    min_cell_size: int | None
    joins: frozenset[frozenset[str]] | None
    dominance: Dominance | None
    analysts: frozenset[str] | None
    perturbation: str | None = None
    cell_key: CellKeyPolicy | None = None
    approved_plans: frozenset[str] | None = None


def _policy_draft(node: _Node, party_names: tuple[str, ...]) -> _PolicyDraft:
    node.allow(_POLICY_KEYS)
    k = node.get("min_cell_size", int, "an integer")
    if k is not None and k < 1:
        raise node.error(f"'min_cell_size' must be at least 1, not {k}", "min_cell_size")
    joins = None
    if node.has("joins"):
        pairs = node.get("joins", list, 'a list of party pairs, e.g. [["hospital", "insurer"]]')
        joins = frozenset(_join_pair(node, pair, party_names) for pair in pairs)
    dominance = None
    if node.has("dominance"):
        dom = node.child("dominance")
        dom.allow(("rule", "n", "percent"))
        kind = dom.get("rule", str, '"n-largest" or "p-percent"') or "n-largest"
        if kind not in ("n-largest", "p-percent"):
            raise dom.error(f"'rule' must be \"n-largest\" or \"p-percent\", not {kind!r}", "rule")
        n = dom.require("n", int, "the number of largest contributors") if kind == "n-largest" else 2
        percent = float(dom.require("percent", (int, float), "a percentage"))
        if n < 1:
            raise dom.error(f"'n' must be at least 1, not {n}", "n")
        if not 0 < percent <= 100:
            raise dom.error(f"'percent' must be in (0, 100], not {percent}", "percent")
        dominance = Dominance(n, percent, kind)
    analysts = None
    if node.has("analysts"):
        names = node.get("analysts", list, "a list of analyst names")
        if not all(isinstance(a, str) and a for a in names):
            raise node.error("'analysts' must be a list of non-empty names", "analysts")
        analysts = frozenset(names)
    perturbation = node.get("perturbation", str, '"cell_key" or "none"')
    if perturbation is not None and perturbation not in PERTURBATIONS:
        close = difflib.get_close_matches(perturbation, PERTURBATIONS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ' (allowed: "cell_key", "none")'
        raise node.error(f"unknown perturbation '{perturbation}'{hint}", "perturbation")
    cell_key = _cell_key(node.child("cell_key"), k if k is not None else 10) if node.has("cell_key") else None
    approved = None
    if node.has("approved_plans"):
        hashes = node.get("approved_plans", list, 'a list of plan hashes (as printed by "sqlmpc approve")')
        for h in hashes:
            if not isinstance(h, str) or not _PLAN_HASH.match(h):
                raise node.error(f"approved plan {h!r} is not a plan hash (64 hex digits, as printed by "
                                 "\"sqlmpc approve FILE.sql\")", "approved_plans")
        approved = frozenset(hashes)
    return _PolicyDraft(k, joins, dominance, analysts, perturbation, cell_key, approved)


def _cell_key(node: _Node, min_cell_size: int) -> CellKeyPolicy:
    """[policy.cell_key]: the perturbation table's parameters (defaults in CellKeyPolicy)."""
    node.allow(("max_deviation", "variance", "min_released_count", "magnitude_deviation"))
    base = CellKeyPolicy()
    policy = CellKeyPolicy(
        max_deviation=node.get("max_deviation", int, "an integer", default=base.max_deviation),
        variance=float(node.get("variance", (int, float), "a number", default=base.variance)),
        min_released_count=node.get("min_released_count", int, "an integer", default=base.min_released_count),
        magnitude_deviation=float(node.get("magnitude_deviation", (int, float), "a number",
                                           default=base.magnitude_deviation)))
    problem = validate_cell_key(policy, min_cell_size)
    if problem:
        raise node.error(f"cell_key: {problem}", problem.split()[0])
    return policy


def _join_pair(node: _Node, pair: object, party_names: tuple[str, ...]) -> frozenset[str]:
    if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
        raise node.error(f"each join must be a pair of party names, found {pair!r}", "joins")
    for name in pair:
        if name not in party_names:
            close = difflib.get_close_matches(name, party_names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (parties: {', '.join(party_names)})"
            raise node.error(f"join names unknown party '{name}'{hint}", "joins")
    if pair[0] == pair[1]:
        raise node.error(f"a join pair needs two different parties, found {pair!r}", "joins")
    return frozenset(pair)


def _policy(draft: _PolicyDraft) -> Policy:
    return Policy(min_cell_size=draft.min_cell_size if draft.min_cell_size is not None else 10,
                  joins=draft.joins, dominance=draft.dominance, analysts=draft.analysts,
                  perturbation=draft.perturbation or "none", cell_key=draft.cell_key or CellKeyPolicy(),
                  approved_plans=draft.approved_plans or frozenset())


def _stricter(policy: Policy, local: _PolicyDraft, node: _Node) -> Policy:
    """Merge a party's local policy, refusing anything looser than the federation's."""
    merged = policy
    if local.min_cell_size is not None:
        if local.min_cell_size < policy.min_cell_size:
            raise node.error(f"a local policy may only be stricter: min_cell_size {local.min_cell_size} is below "
                             f"the federation's {policy.min_cell_size}", "min_cell_size")
        merged = replace(merged, min_cell_size=local.min_cell_size)
    if local.joins is not None:
        if policy.joins is not None and not local.joins <= policy.joins:
            extra = sorted("-".join(sorted(p)) for p in local.joins - policy.joins)
            raise node.error(f"a local policy may only be stricter: joins {', '.join(extra)} are not allowed by "
                             "the federation", "joins")
        merged = replace(merged, joins=local.joins)
    if local.dominance is not None:
        fed = policy.dominance
        loc = local.dominance
        if fed is not None and loc.kind != fed.kind:
            raise node.error(f"a local policy may only tighten the federation's dominance rule "
                             f"({fed.kind}), not replace it with a {loc.kind} rule", "dominance")
        looser = (loc.percent < fed.percent if loc.kind == "p-percent"
                  else loc.n < fed.n or loc.percent > fed.percent) if fed is not None else False
        if looser:
            raise node.error(f"a local policy may only be stricter: dominance (n = {local.dominance.n}, "
                             f"percent = {local.dominance.percent}) is looser than the federation's (n = {fed.n}, "
                             f"percent = {fed.percent})", "dominance")
        merged = replace(merged, dominance=local.dominance)
    if local.analysts is not None:
        if policy.analysts is not None and not local.analysts <= policy.analysts:
            extra = ", ".join(sorted(local.analysts - policy.analysts))
            raise node.error(f"a local policy may only be stricter: analysts {extra} are not allowed by the "
                             "federation", "analysts")
        merged = replace(merged, analysts=local.analysts)
    if local.perturbation is not None:
        if local.perturbation == "none" and policy.perturbation != "none":
            raise node.error("a local policy may only be stricter: perturbation \"none\" would release exactly "
                             "what the federation perturbs", "perturbation")
        merged = replace(merged, perturbation=local.perturbation)
    if local.cell_key is not None:
        raise node.error("the perturbation table's parameters belong in the federation file (every party "
                         "must use the same table)", "cell_key")
    if local.approved_plans is not None:
        extra = local.approved_plans - policy.approved_plans
        if extra:
            raise node.error(f"a local policy may only be stricter: plans {', '.join(sorted(h[:12] for h in extra))} "
                             "are not approved by the federation", "approved_plans")
        merged = replace(merged, approved_plans=local.approved_plans)
    return merged


# -- the whole file -------------------------------------------------------------

def load_federation(path: str | Path, *, local_policy: str | Path | None = None) -> Federation:
    """Read and validate a federation file; merge a party's (stricter) local policy file.

    Data files are not opened here: each party only holds its own.  Every
    mistake is a ConfigError naming the file, the TOML key path and the line.
    """
    path = Path(path)
    data, source = _read_toml(path)
    root = _Node(source, data, ())
    root.allow(("federation", "policy", "parties"))
    if not root.has("federation"):
        raise root.error("missing the [federation] table (name = ...)", "federation", missing=True)
    fed_node = root.child("federation")
    fed_node.allow(("name", "insecure_demo", "description"))
    name = str(fed_node.require("name", str, "the federation's name"))
    insecure_demo = bool(fed_node.get("insecure_demo", bool, "true or false", default=False))

    if not root.has("parties"):
        raise root.error("missing the [parties] table: a federation needs at least 3 parties", "parties",
                         missing=True)
    parties_node = root.child("parties")
    base_dir = path.resolve().parent
    parties = tuple(_party(p, p_name, base_dir) for p_name, p in parties_node.children())
    duplicate = _find_duplicate(p.name for p in parties)
    if duplicate:
        raise parties_node.error(f"duplicate party name '{duplicate}' (names are case-insensitive)", duplicate)
    if len(parties) < MIN_SECURE_PARTIES and not insecure_demo:
        raise parties_node.error(
            f"a federation needs at least {MIN_SECURE_PARTIES} parties, found {len(parties)}: MPC with an honest "
            "majority gives no secrecy with 2 parties (either one could reconstruct every secret); add a third "
            "party (it may hold no data) or set insecure_demo = true under [federation] for a demo")

    party_names = tuple(p.name for p in parties)
    draft = _policy_draft(root.child("policy"), party_names) if root.has("policy") else _PolicyDraft(
        None, None, None, None)
    policy = _policy(draft)
    federation = Federation(name, parties, policy, insecure_demo, path=path)
    # The fingerprint covers the shared file only, so every party computes the same hash.
    federation = replace(federation, fingerprint=_fingerprint(federation, base_dir))
    if local_policy is not None:
        federation = replace(federation, policy=_local_policy(Path(local_policy), policy, party_names))
    return federation


def _local_policy(path: Path, policy: Policy, party_names: tuple[str, ...]) -> Policy:
    data, source = _read_toml(path)
    root = _Node(source, data, ())
    root.allow(("policy",))
    if not root.has("policy"):
        raise root.error("a local policy file holds one [policy] table", "policy", missing=True)
    node = root.child("policy")
    return _stricter(policy, _policy_draft(node, party_names), node)


def _fingerprint(federation: Federation, base_dir: Path) -> str:
    """sha256 of a canonical JSON of the content; sources relative, so the hash is the same everywhere."""

    def column(c: Column) -> dict:
        return {"name": c.name, "type": c.type, "role": c.role.value, "domain": c.domain, "range": c.range,
                "scale": c.scale, "key_space": c.key_space, "unique": c.unique, "nullable": c.nullable}

    def table(t: Table) -> dict:
        source = t.format if t.source is None else Path(os.path.relpath(t.source, base_dir)).as_posix()
        return {"name": t.name, "source": source,
                "format": t.format, "source_table": t.source_table, "columns": [column(c) for c in t.columns]}

    policy = federation.policy
    content = {
        "name": federation.name,
        "insecure_demo": federation.insecure_demo,
        "parties": [{"name": p.name, "address": p.address, "tables": [table(t) for t in p.tables]}
                    for p in federation.parties],
        "policy": {
            "min_cell_size": policy.min_cell_size,
            "joins": None if policy.joins is None else sorted(sorted(pair) for pair in policy.joins),
            "dominance": None if policy.dominance is None else [policy.dominance.n, policy.dominance.percent]
            + ([] if policy.dominance.kind == "n-largest" else [policy.dominance.kind]),
            "analysts": None if policy.analysts is None else sorted(policy.analysts),
        },
    }
    # Approved plans are not in the fingerprint (a plan's hash covers the fingerprint: approving a
    # plan must not change it); each plan states whether it is perturbed, so parties still agree.
    if policy.perturbation != "none":
        content["policy"]["perturbation"] = [policy.perturbation, policy.cell_key.as_dict()]
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
