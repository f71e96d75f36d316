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
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli_w

from sqlmpc.policy import Dominance, Policy, PolicyDraft, policy_draft, policy_of, with_local_policy  # noqa: F401 (re-exported)
from sqlmpc.tomlfile import Node, check_name, describe, find_duplicate, read_toml


class Role(enum.Enum):
    KEY = "key"              # join equality / COUNT(DISTINCT) only
    DIMENSION = "dimension"  # GROUP BY, WHERE; has a public domain
    MEASURE = "measure"      # aggregates, WHERE; has a declared range
    ATTRIBUTE = "attribute"  # local WHERE at its owner only


DEFAULT_BATCH_ROWS = 1 << 16     # chosen by measurement: BENCHMARKS.md, "Population scale"
# Rows per key value assumed of a key column that declares neither `unique` nor `max_rows`: every
# per-person sum, and so every field, is sized for it (docs/secure-execution.md §2.1).
DEFAULT_ROWS_PER_KEY = 1 << 24


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
    max_rows: int | None = None                 # key: at most this many rows per key value

    @property
    def rows_per_key(self) -> int:
        """The most rows one key value may have, as declared (and checked when the data are read)."""
        return 1 if self.unique else self.max_rows or DEFAULT_ROWS_PER_KEY


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
    workers: int = 1                            # processes for its share of the secure stages

    def connection(self, kind: str) -> Connection | None:
        return next((c for c in self.connections if c.kind == kind), None)

    def table(self, name: str) -> Table | None:
        lname = name.lower()
        return next((t for t in self.tables if t.name.lower() == lname), None)


@dataclass(frozen=True)
class Federation:
    name: str
    parties: tuple[Party, ...]
    policy: Policy = field(default_factory=Policy)
    insecure_demo: bool = False
    path: Path | None = field(default=None, compare=False)
    batch_rows: int = DEFAULT_BATCH_ROWS             # rows per batch of the secure stages (bounds memory)
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
# -- columns ------------------------------------------------------------------

_COLUMN_KEYS = ("type", "role", "domain", "range", "scale", "key_space", "unique", "max_rows", "nullable",
                "description")
_KEYS_OF_ROLE = {Role.KEY: ("key_space", "unique", "max_rows"), Role.DIMENSION: ("domain",),
                 Role.MEASURE: ("range", "scale"), Role.ATTRIBUTE: ()}
_ROLE_SPECIFIC = frozenset(k for keys in _KEYS_OF_ROLE.values() for k in keys)


def _column(node: Node, name: str) -> Column:
    check_name(node, name, "column")
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


def _key_column(node: Node, name: str, type_: str, nullable: bool) -> Column:
    if nullable:
        raise node.error("a key column cannot be nullable: rows without a key cannot be joined or counted",
                         "nullable")
    key_space = node.require("key_space", str, "the name of the key space, e.g. \"pseudonym\"")
    if not key_space:
        raise node.error("'key_space' must not be empty", "key_space")
    unique = node.get("unique", bool, "true or false", default=False)
    max_rows = node.get("max_rows", int, "a positive integer: the most rows one key value may have")
    if max_rows is not None:
        if max_rows < 1:
            raise node.error(f"'max_rows' must be a positive integer, not {max_rows!r}", "max_rows")
        if unique:
            raise node.error("give 'unique = true' or 'max_rows', not both (unique means max_rows = 1)",
                             "max_rows")
        if max_rows > DEFAULT_ROWS_PER_KEY:
            raise node.error(f"'max_rows' may be at most {DEFAULT_ROWS_PER_KEY:,} (2^24, what an undeclared "
                             "key is assumed to have)", "max_rows")
    return Column(name, type_, Role.KEY, key_space=key_space, unique=unique, nullable=False, max_rows=max_rows)


def _measure_column(node: Node, name: str, type_: str, nullable: bool) -> Column:
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


def _domain(node: Node, type_: str) -> tuple:
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
        raise node.error(f"'domain' must be a list of values or {{ from = a, to = b }}, found {describe(raw)}",
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

def _table(node: Node, party: str, name: str, base_dir: Path) -> Table:
    check_name(node, name, "table")
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
    duplicate = find_duplicate(c.name for c in columns)
    if duplicate:
        raise columns_node.error(f"duplicate column name '{duplicate}' (names are case-insensitive)", duplicate)
    keys = [c.name for c in columns if c.role is Role.KEY]
    if len(keys) != 1:
        found = f"found {len(keys)}: {', '.join(keys)}" if keys else "found none"
        raise columns_node.error(f"a table must have exactly one key column ({found})")
    path = None if format_ in SOURCE_KINDS else (base_dir / source).resolve()
    return Table(party, name, path, format_, columns, source_table=source_table)


def _connection(node: Node, kind: str) -> Connection:
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


def positive_int(node: Node, key: str, default: int, what: str) -> int:
    value = node.get(key, int, what, default=default)
    if value < 1:
        raise node.error(f"'{key}' must be a positive integer, not {value!r}", key)
    return value


def _address(node: Node) -> str:
    address = str(node.require("address", str, '"host:port"'))
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    valid_host = bool(host) and (bracketed or re.fullmatch(r"[A-Za-z0-9.-]+", host) is not None)
    if not sep or not valid_host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise node.error(f"bad address '{address}': expected \"host:port\" with a port 1-65535", "address")
    return address


def _party(node: Node, name: str, base_dir: Path) -> Party:
    check_name(node, name, "party")
    if name.lower() in RESERVED_PARTY_NAMES:
        raise node.error(f"'{name}' is reserved by DuckDB and cannot name a party")
    node.allow(("address", "tables", "description", "workers", *SOURCE_KINDS))
    address = _address(node)
    workers = positive_int(node, "workers", 1, "a positive integer (processes for the secure stages)")
    connections = tuple(_connection(node.child(kind), kind) for kind in SOURCE_KINDS if node.has(kind))
    tables: tuple[Table, ...] = ()
    if node.has("tables"):
        tables_node = node.child("tables")
        tables = tuple(_table(t, name, t_name, base_dir) for t_name, t in tables_node.children())
        duplicate = find_duplicate(t.name for t in tables)
        if duplicate:
            raise tables_node.error(f"duplicate table name '{duplicate}' (names are case-insensitive)", duplicate)
    # Connections are the owner's business: they are not in the fingerprint, and another
    # party's copy of the file may leave them out (sqlmpc.local.sources checks the owner's).
    return Party(name, address, tables, connections, workers)


# -- the whole file -------------------------------------------------------------

def load_federation(path: str | Path, *, local_policy: str | Path | None = None) -> Federation:
    """Read and validate a federation file; merge a party's (stricter) local policy file.

    Data files are not opened here: each party only holds its own.  Every
    mistake is a ConfigError naming the file, the TOML key path and the line.
    """
    path = Path(path)
    data, source = read_toml(path)
    root = Node(source, data, ())
    root.allow(("federation", "policy", "parties"))
    if not root.has("federation"):
        raise root.error("missing the [federation] table (name = ...)", "federation", missing=True)
    fed_node = root.child("federation")
    fed_node.allow(("name", "insecure_demo", "description", "batch_rows"))
    name = str(fed_node.require("name", str, "the federation's name"))
    insecure_demo = bool(fed_node.get("insecure_demo", bool, "true or false", default=False))
    batch_rows = positive_int(fed_node, "batch_rows", DEFAULT_BATCH_ROWS,
                              "a positive integer (rows per batch of the secure stages)")

    if not root.has("parties"):
        raise root.error("missing the [parties] table: a federation needs at least 3 parties", "parties",
                         missing=True)
    parties_node = root.child("parties")
    base_dir = path.resolve().parent
    parties = tuple(_party(p, p_name, base_dir) for p_name, p in parties_node.children())
    duplicate = find_duplicate(p.name for p in parties)
    if duplicate:
        raise parties_node.error(f"duplicate party name '{duplicate}' (names are case-insensitive)", duplicate)
    if len(parties) < MIN_SECURE_PARTIES and not insecure_demo:
        raise parties_node.error(
            f"a federation needs at least {MIN_SECURE_PARTIES} parties, found {len(parties)}: MPC with an honest "
            "majority gives no secrecy with 2 parties (either one could reconstruct every secret); add a third "
            "party (it may hold no data) or set insecure_demo = true under [federation] for a demo")

    party_names = tuple(p.name for p in parties)
    draft = policy_draft(root.child("policy"), party_names) if root.has("policy") else PolicyDraft(
        None, None, None, None)
    policy = policy_of(draft)
    federation = Federation(name, parties, policy, insecure_demo, path=path, batch_rows=batch_rows)
    # The fingerprint covers the shared file only, so every party computes the same hash.
    federation = replace(federation, fingerprint=_fingerprint(federation, base_dir))
    if local_policy is not None:
        federation = replace(federation, policy=with_local_policy(Path(local_policy), policy, party_names))
    return federation


def shared_text(federation: Federation) -> str:
    """The federation file as anyone it is shown to may read it (an analyst's ``catalog``): the
    tables, columns, roles and policy every party holds, without the owner's private settings —
    its database connections, its workers, where its files lie and what its tables are called
    inside its databases — and without comments.  It loads as the same catalog (every file
    source renamed ``<table>.<suffix>``; the fingerprint is the one the parties compare)."""
    data, _ = read_toml(federation.path)
    for party in data.get("parties", {}).values():
        for private in (*SOURCE_KINDS, "workers"):
            party.pop(private, None)
        for name, table in party.get("tables", {}).items():
            if table.get("source") not in SOURCE_KINDS:
                table["source"] = f"{name}{Path(str(table.get('source', ''))).suffix.lower()}"
            if "table" in table:
                table["table"] = name
    return tomli_w.dumps(data)


def _fingerprint(federation: Federation, base_dir: Path) -> str:
    """sha256 of a canonical JSON of the content; sources relative, so the hash is the same everywhere."""

    def column(c: Column) -> dict:
        out = {"name": c.name, "type": c.type, "role": c.role.value, "domain": c.domain, "range": c.range,
               "scale": c.scale, "key_space": c.key_space, "unique": c.unique, "nullable": c.nullable}
        if c.max_rows is not None:        # only when declared: older federation files keep their hash
            out["max_rows"] = c.max_rows
        return out

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
    if federation.batch_rows != DEFAULT_BATCH_ROWS:      # every party must batch alike: the protocol follows it
        content["batch_rows"] = federation.batch_rows
    # Approved plans are not in the fingerprint (a plan's hash covers the fingerprint: approving a
    # plan must not change it); each plan states whether it is perturbed, so parties still agree.
    if policy.perturbation != "none":
        content["policy"]["perturbation"] = [policy.perturbation, policy.cell_key.as_dict()]
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
