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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli_w

from sqlmpc.errors import ConfigError
from sqlmpc.policy import (Dominance, Policy, PolicyDraft, policy_draft, policy_of,  # noqa: F401 (re-exported)
                           stricter, with_local_policy)
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
    source: Path | None                         # absolute path of the data file, under its party's data
                                                # directory, symlinks resolved (None: in a database)
    format: str                                 # "parquet" | "csv" | "duckdb" | "postgresql" | "spark"
    columns: tuple[Column, ...]
    source_table: str | None = None             # the table inside a .duckdb file, PostgreSQL or Spark
    source_name: str | None = None              # a file source as the shared file names it (normalised,
                                                # relative to the party's data directory)

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

    Only ever read from the party's own local file (``load_federation(..., local_policy=...)``),
    never from the shared federation file.  ``postgresql``: a libpq URI or DSN without password
    (``dsn``, or the environment variable ``dsn_env`` that holds it); the password from the
    environment variable ``password_env`` or the file ``password_file``, sent only to the host of
    that DSN.  ``spark``: the ``master`` URL and ``conf`` settings from an allow-list
    (``SPARK_CONF_ALLOWED``).
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
    data_dir: Path | None = None                # where its files lie (its local file's [data] dir, else the
                                                # federation file's directory); file sources stay under it

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
    # The local files it was loaded with, party -> path (an embedded federation's party processes
    # load the same); not part of the fingerprint.
    local_files: tuple[tuple[str, Path], ...] = field(default=(), compare=False)

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

def _table(node: Node, party: str, name: str, data_dir: Path) -> Table:
    check_name(node, name, "table")
    node.allow(("source", "table", "columns", "description"))
    source = str(node.require("source", str, "the data file, relative to the party's data directory, or "
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
    if format_ in SOURCE_KINDS:
        return Table(party, name, None, format_, columns, source_table=source_table)
    path, source_name = _file_source(node, party, source, data_dir)
    return Table(party, name, path, format_, columns, source_table=source_table, source_name=source_name)


_DATA_DIR = ("the party's data directory (the [data] dir of its own local file; without one, the federation "
             "file's directory)")


def _file_source(node: Node, party: str, source: str, data_dir: Path) -> tuple[Path, str]:
    """A file source: a relative path that stays, symlinks resolved, under the party's data directory.

    The shared file names a table's file, never where on a party's machine it lies: an absolute
    path, a ``..`` or a symlink out of the data directory would let the file read anything.
    """
    written = Path(source)
    if written.is_absolute() or source.startswith("~"):
        raise node.error(f"source '{source}' is an absolute path: a file source is a path relative to {_DATA_DIR}; "
                         f"party '{party}' says where its files lie in its own local file ([data] dir = ...)",
                         "source")
    if ".." in written.parts:
        raise node.error(f"source '{source}' leaves {_DATA_DIR} with '..': a file source must lie under it",
                         "source")
    root = data_dir.resolve()
    path = (root / written).resolve()
    if not path.is_relative_to(root):
        raise node.error(f"source '{source}' resolves (through a symbolic link) outside {_DATA_DIR}: a file "
                         "source must lie under it", "source")
    return path, Path(os.path.normpath(source)).as_posix()


# Spark settings a party's local file may give: what sizes and tunes the session and names its
# catalogs.  Everything else is refused: settings that put code on the JVM's class path or run it
# (spark.jars*, spark.*.extraJavaOptions, spark.*.extraClassPath, spark.plugins, listeners,
# spark.sql.extensions, a Hive metastore's jars) would turn a configuration into code execution.
SPARK_CONF_ALLOWED = frozenset({
    "spark.driver.memory", "spark.driver.cores", "spark.driver.maxResultSize",
    "spark.executor.memory", "spark.executor.cores", "spark.executor.instances", "spark.cores.max",
    "spark.default.parallelism", "spark.local.dir", "spark.app.name",
    "spark.hadoop.hive.metastore.uris",
})
SPARK_CONF_PREFIXES = ("spark.sql.",)            # includes spark.sql.catalog.* and spark.sql.warehouse.dir
SPARK_CONF_REFUSED = re.compile(r"extension|listener|jars|classpath|javaoptions|librarypath|plugin|"
                                r"metastore\.(?:jars|sharedprefixes|barrierprefixes)", re.IGNORECASE)


def spark_conf_allowed(key: str) -> bool:
    if key in SPARK_CONF_ALLOWED:
        return True
    return key.startswith(SPARK_CONF_PREFIXES) and SPARK_CONF_REFUSED.search(key) is None


def _connection(node: Node, kind: str, base_dir: Path) -> Connection:
    """A party's [postgresql] or [spark] table (its own local file).  No message quotes a value."""
    if kind == "spark":
        node.allow(("master", "conf"))
        master = str(node.get("master", str, 'a Spark master URL or "local[*]"', default="local[*]"))
        conf = node.child("conf").value if node.has("conf") else {}
        for key, value in conf.items():
            if not spark_conf_allowed(key):
                raise node.child("conf").error(
                    f"Spark setting '{key}' is not allowed: a party's conf may set spark.sql.* (catalogs, the "
                    f"warehouse dir; not extensions, listeners or jars) and {', '.join(sorted(SPARK_CONF_ALLOWED))}"
                    " (settings that load jars or pass JVM options would run code)", key)
            if not isinstance(value, (str, int, float, bool)):
                raise node.child("conf").error(f"Spark setting '{key}' must be a plain value (text, number or "
                                               "boolean)", key)
        return Connection("spark", master=master, conf=tuple(sorted((k, str(v)) for k, v in conf.items())))
    node.allow(("dsn", "dsn_env", "password_env", "password_file"))
    dsn = node.get("dsn", str, "a libpq URI or DSN without password")
    dsn_env = node.get("dsn_env", str, "the name of an environment variable holding the DSN")
    if (dsn is None) == (dsn_env is None):
        raise node.error("a postgresql connection needs exactly one of 'dsn' and 'dsn_env'", "dsn",
                         missing=dsn is None)
    if dsn is not None and re.search(r"password\s*=|://[^/@]*:[^/@]*@", dsn):
        raise node.error("the DSN holds a password: never write one into a file; use 'password_env' or "
                         "'password_file'", "dsn")
    password_env = node.get("password_env", str, "the name of an environment variable")
    password_file = node.get("password_file", str, "the path of a file holding the password")
    if password_env is not None and password_file is not None:
        raise node.error("give 'password_env' or 'password_file', not both", "password_file")
    if password_file is not None:
        password_file = str(base_dir / Path(password_file).expanduser())
    return Connection("postgresql", dsn=dsn, dsn_env=dsn_env, password_env=password_env,
                      password_file=password_file)


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


@dataclass(frozen=True)
class PrivateSettings:
    """What one party's own local file says about it alone: where its files lie, how it reaches its databases."""

    data_dir: Path | None = None
    connections: tuple[Connection, ...] = ()


def _party(node: Node, name: str, base_dir: Path, private: PrivateSettings | None) -> Party:
    check_name(node, name, "party")
    if name.lower() in RESERVED_PARTY_NAMES:
        raise node.error(f"'{name}' is reserved by DuckDB and cannot name a party")
    for kind in SOURCE_KINDS:
        if node.has(kind):
            # Every party holds the shared file: a connection in it would make party 'name' send its
            # password, read a file or run a JVM as whoever wrote the file says.
            raise node.error(
                f"[parties.{name}.{kind}] does not belong in the shared federation file: a party's database "
                f"connection is its private setting; move it into party '{name}''s own local file as [{kind}] "
                "(sqlmpc serve --policy FILE; load_federation(..., local_policy=FILE, party=NAME))", kind)
    node.allow(("address", "tables", "description", "workers"))
    address = _address(node)
    workers = positive_int(node, "workers", 1, "a positive integer (processes for the secure stages)")
    private = private or PrivateSettings()
    data_dir = private.data_dir or base_dir
    tables: tuple[Table, ...] = ()
    if node.has("tables"):
        tables_node = node.child("tables")
        tables = tuple(_table(t, name, t_name, data_dir) for t_name, t in tables_node.children())
        duplicate = find_duplicate(t.name for t in tables)
        if duplicate:
            raise tables_node.error(f"duplicate table name '{duplicate}' (names are case-insensitive)", duplicate)
    # Connections are the owner's business: they are not in the fingerprint, and only the owner's
    # local file holds them (sqlmpc.local.sources checks there is one for each kind it uses).
    return Party(name, address, tables, private.connections, workers, data_dir=data_dir)


LOCAL_SECTIONS = ("policy", "data", *SOURCE_KINDS)
PRIVATE_SECTIONS = ("data", *SOURCE_KINDS)


def _local_files(local_policy, party: str | None) -> list[tuple[str | None, Path]]:
    """(owner, path) pairs from ``local_policy``: one path (its owner ``party``), a mapping party -> path,
    or a sequence of (owner or None, path) pairs (``Federation.local_files``)."""
    if local_policy is None:
        return []
    if isinstance(local_policy, (str, Path)):
        return [(party, Path(local_policy))]
    if isinstance(local_policy, Mapping):
        return [(owner or None, Path(p)) for owner, p in local_policy.items()]
    return [(owner or None, Path(p)) for owner, p in local_policy]


def _private_settings(root: Node, path: Path) -> PrivateSettings:
    base_dir = path.resolve().parent
    data_dir = None
    if root.has("data"):
        data = root.child("data")
        data.allow(("dir",))
        written = data.require("dir", str, "the directory holding the party's data files")
        data_dir = (base_dir / Path(written).expanduser()).resolve()
        if not data_dir.is_dir():
            raise data.error("the data directory does not exist or is not a directory", "dir")
    connections = tuple(_connection(root.child(kind), kind, base_dir) for kind in SOURCE_KINDS if root.has(kind))
    return PrivateSettings(data_dir, connections)


# -- the whole file -------------------------------------------------------------

def load_federation(path: str | Path, *, local_policy=None, party: str | None = None) -> Federation:
    """Read and validate the shared federation file and a party's own local file.

    The local file (``local_policy``) may hold a ``[policy]`` (merged: only stricter) and the
    private settings of ``party``, the party that loads it: ``[data] dir`` (where its files lie;
    every file source must stay under it), ``[postgresql]`` and ``[spark]`` (how it reaches its
    databases).  A federation running several parties at one place (the embedded one, tests) may
    give a mapping party -> local file instead.  Data files are not opened here: each party only
    holds its own.  Every mistake is a ConfigError naming the file, the TOML key path and the line.
    """
    path = Path(path)
    locals_ = _local_files(local_policy, party)
    private: dict[str, PrivateSettings] = {}
    local_policies: list[Node] = []
    for owner, local_path in locals_:
        local_data, local_source = read_toml(local_path)
        local_root = Node(local_source, local_data, ())
        local_root.allow(LOCAL_SECTIONS)
        if not any(local_root.has(k) for k in LOCAL_SECTIONS):
            raise local_root.error("a local file holds a [policy] table and the party's private settings "
                                   "([data], [postgresql], [spark])", "policy", missing=True)
        given = next((k for k in PRIVATE_SECTIONS if local_root.has(k)), None)
        if given is not None:
            if owner is None:
                raise local_root.error(f"[{given}] is a party's private setting: say which party loads this file "
                                       "(sqlmpc serve --party NAME; load_federation(..., party=NAME))", given)
            private[owner.lower()] = _private_settings(local_root, local_path)
        if local_root.has("policy"):
            local_policies.append(local_root.child("policy"))
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
    parties = tuple(_party(p, p_name, base_dir, private.get(p_name.lower())) for p_name, p in parties_node.children())
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
    unknown = sorted(set(private) - {p.lower() for p in party_names})
    if unknown:
        raise ConfigError(f"a local file's private settings are for party '{unknown[0]}', which the federation "
                          f"does not have (parties: {', '.join(party_names)})", path=str(path))
    federation = Federation(name, parties, policy, insecure_demo, path=path, batch_rows=batch_rows,
                            local_files=tuple(locals_))
    # The fingerprint covers the shared file only, so every party computes the same hash.
    federation = replace(federation, fingerprint=_fingerprint(federation, base_dir))
    for node in local_policies:
        policy = stricter(policy, policy_draft(node, party_names), node)
    return replace(federation, policy=policy)


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
        source = t.format if t.source is None else t.source_name   # as written, relative to the data dir
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
