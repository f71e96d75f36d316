"""Where a statement from a PostgreSQL client goes: session commands, the federation, or the catalog.

* ``SET``/``RESET``/``BEGIN``/``COMMIT``/... are answered here (sqlmpc is read-only);
  ``SET sqlmpc.suppressed_column = on`` adds the ``_suppressed`` column to results.
* A statement naming a party's table, or one of sqlmpc's own (SHOW TABLES, DESCRIBE,
  SHOW POLICY, EXPLAIN), runs on the federation through the DB-API connection.
* Anything else (``pg_catalog``, ``information_schema``, ``SELECT version()``) is
  answered from the sealed catalog, which holds no data and runs only one SELECT over
  its own relations (``sqlmpc.pg.catalog``); every other statement is refused there
  with SQLSTATE 42501.

Nothing that names a party's table reaches the catalog's DuckDB, Describe included:
the result columns of a federation query are computed by sqlmpc's own binder
(``describe``), never by running its text.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import logging

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.output import with_suppressed
from sqlmpc.pg.catalog import CatalogAccessError, CatalogCursor, CatalogQueryError, PgCatalog
from sqlmpc.pg.settings import show
from sqlmpc.sql import Query, parse

log = logging.getLogger("sqlmpc.pg")

SUPPRESSED_OPTION = "sqlmpc.suppressed_column"

_SESSION_COMMAND = re.compile(r"^\s*(SET|RESET|BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|DISCARD|DEALLOCATE"
                              r"|CLOSE|UNLISTEN|LISTEN)\b", re.I)
_SET = re.compile(r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?([\w.]+)\s*(?:=|\bTO\b)\s*'?([^';]*)'?", re.I)
_PLACEHOLDER = re.compile(r"\$(\d+)")
_SHOW = re.compile(r"^\s*SHOW\s+(?!TABLES\b|POLICY\b)(\w[\w. ]*?)\s*;?\s*$", re.I)   # not sqlmpc's own SHOWs


@dataclass
class Answer:
    """What a statement returns: a table (or None for a command) and its command tag."""

    tag: str
    table: pa.Table | None = None
    suppressed: list[bool] = field(default_factory=list)


@dataclass
class Options:
    """Per-connection settings (startup ``options`` or ``SET``)."""

    suppressed_column: bool = False


def truthy(value: str) -> bool:
    return value.strip().lower() in ("on", "true", "1", "yes")


def parse_startup_options(options: str, into: Options) -> None:
    """libpq's ``options`` (``-c sqlmpc.suppressed_column=on``) as connection settings."""
    for name, value in re.findall(r"(?:-c\s*|--)([\w.]+)=(\S+)", options or ""):
        if name.lower() == SUPPRESSED_OPTION:
            into.suppressed_column = truthy(value)


def qmark(sql: str, parameters: list) -> tuple[str, list]:
    """``$n`` placeholders as ``?`` with the parameters in order of appearance."""
    ordered: list = []

    def one(match: re.Match) -> str:
        n = int(match.group(1))
        if not 1 <= n <= len(parameters):
            raise errors.ProgrammingError(f"there is no parameter ${n}")
        ordered.append(parameters[n - 1])
        return "?"

    return _PLACEHOLDER.sub(one, sql), ordered


def placeholder_count(sql: str) -> int:
    return max((int(n) for n in _PLACEHOLDER.findall(sql)), default=0)


class Router:
    """Shared by every client connection; one federation query at a time."""

    def __init__(self, connection):
        self.connection = connection
        self.catalog = PgCatalog(connection.federation)
        self._parties = {p.lower() for p in connection.federation.party_names}
        self._lock = threading.Lock()
        self._party_prefix = re.compile(r"\b(?:" + "|".join(map(re.escape, self._parties)) + r')"?\s*\.', re.I)

    def names_a_party(self, sql: str) -> bool:
        try:
            trees = sqlglot.parse(sql, read="postgres")
        except sqlglot.errors.SqlglotError:      # not even PostgreSQL: does it mention a party's table?
            return bool(self._party_prefix.search(sql))
        return any(t.db.lower() in self._parties for tree in trees if tree for t in tree.find_all(exp.Table))

    def kind(self, sql: str) -> str:
        """Where ``sql`` goes: "session" (SET, BEGIN, ...), "show", "federation" or "catalog"."""
        if _SESSION_COMMAND.match(sql):
            return "session"
        if _SHOW.match(sql):
            return "show"
        if self.names_a_party(sql) or self._sqlmpc_statement(sql):
            return "federation"
        return "catalog"

    def run(self, sql: str, parameters: list, options: Options, catalog: CatalogCursor,
            kind: str | None = None) -> Answer:
        """Answer one statement; ``catalog`` is the client's own cursor on the sealed catalog."""
        kind = kind or self.kind(sql)
        if kind == "session":
            return self._session_command(sql, _SESSION_COMMAND.match(sql).group(1).upper(), options)
        if kind == "show":
            name = _SHOW.match(sql).group(1)
            value = (("on" if options.suppressed_column else "off") if name.lower() == SUPPRESSED_OPTION
                     else show(name))
            column = "_".join(name.lower().split()).removesuffix("_level")     # as PostgreSQL names it
            return Answer("SHOW", pa.table({column: [value]}))
        if kind == "federation":
            return self._federation(sql, parameters, options)
        return self._catalog(sql, parameters, catalog)

    def _sqlmpc_statement(self, sql: str) -> bool:
        """SHOW TABLES, DESCRIBE, SHOW POLICY, EXPLAIN: sqlmpc's statements that need no party table."""
        try:
            return not isinstance(parse(sql), Query)
        except errors.Error:
            return False

    def _session_command(self, sql: str, verb: str, options: Options) -> Answer:
        setting = _SET.match(sql)
        if setting and setting.group(1).lower() == SUPPRESSED_OPTION:
            options.suppressed_column = truthy(setting.group(2))
        if verb == "RESET" and SUPPRESSED_OPTION in sql.lower():
            options.suppressed_column = False
        tags = {"START TRANSACTION": "BEGIN", "END": "COMMIT"}
        return Answer(tags.get(re.sub(r"\s+", " ", verb), verb))

    def _federation(self, sql: str, parameters: list, options: Options) -> Answer:
        sql, ordered = qmark(sql, parameters)
        with self._lock:
            result = self.connection.run(sql, ordered or None)
        table = with_suppressed(result) if options.suppressed_column else result.table
        return Answer(f"SELECT {table.num_rows}", table, list(result.suppressed))

    def _catalog(self, sql: str, parameters: list, catalog: CatalogCursor) -> Answer:
        try:
            table = catalog.query(sql, parameters)
        except duckdb.Error as exc:
            raise CatalogQueryError(
                f"{str(exc).splitlines()[0]} -- a statement that names no party's table is answered from the "
                f"catalog only (parties {', '.join(sorted(self._parties))} are schemas)") from None
        return Answer(f"SELECT {table.num_rows}", table)

    def describe(self, sql: str, options: Options, catalog: CatalogCursor,
                 kind: str | None = None) -> pa.Schema | None:
        """The result columns of a statement without running it (for Describe); None: not known before Execute.

        A catalog query is checked like one and described over the empty catalog (a refused one raises
        CatalogAccessError); a federation query is described by sqlmpc's binder, never run in the catalog.
        """
        kind = kind or self.kind(sql)
        if kind in ("session", "show"):
            return None
        if kind == "federation":
            return self._federation_schema(sql, options, catalog)
        try:
            return catalog.describe(sql)
        except duckdb.Error:
            return None

    def _federation_schema(self, sql: str, options: Options, catalog: CatalogCursor) -> pa.Schema | None:
        """A federation statement's columns from its bound tree (parameters as NULL): no party is asked."""
        from sqlmpc.metadata import run_metadata          # the planner's modules, only when a client describes
        from sqlmpc.plan.compile import bind_query
        from sqlmpc.result import result_types
        try:
            text, ordered = qmark(sql, [None] * placeholder_count(sql))
            statement = parse(text)
            if not isinstance(statement, Query):
                result = run_metadata(self.connection.federation, statement)
                return None if result is None else result.table.schema
            bound = bind_query(statement, self.connection.federation, ordered)
            names = [name for name, _ in bound.select]
            types = result_types(bound)
        except errors.Error:
            return None                  # Execute reports it
        except Exception:                # a describe must never take the connection down
            log.exception("describing %r", sql)
            return None
        # The types as Arrow types: cast NULLs in the sealed catalog (no relation, nothing read).
        casts = ", ".join(f"CAST(NULL AS {t}) AS {_ident(f'c{i}')}" for i, t in enumerate(types))
        try:
            schema = catalog.query(f"SELECT {casts}").schema if casts else pa.schema([])
        except (duckdb.Error, CatalogAccessError):
            return None
        fields = [pa.field(name, f.type) for name, f in zip(names, schema)]
        if options.suppressed_column:
            fields.append(pa.field("_suppressed", pa.bool_()))
        return pa.schema(fields)


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")
