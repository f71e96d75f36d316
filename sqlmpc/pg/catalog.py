"""Answers to the catalog queries that psql (``\\dt``, ``\\d``) and BI tools send, from a sealed DuckDB.

Parties are schemas and their tables are empty DuckDB tables of the same
columns and types, so DuckDB's own ``pg_catalog`` and ``information_schema``
views describe the federation.  PostgreSQL-only spellings in the clients'
queries (``OPERATOR(pg_catalog.~)``, ``COLLATE pg_catalog.default``, casts to
``regclass``) are rewritten, and the functions DuckDB lacks are macros.
No query here ever touches a party's data.

The catalog is sealed, because anyone who reaches ``sqlmpc pg`` can send it text:

* its in-memory DuckDB has external access off (no files, COPY, ATTACH,
  INSTALL/LOAD, replacement scans), no extension autoloading, and a locked
  configuration (``SEAL``);
* a statement reaches it only after :meth:`PgCatalog.check` accepted it: exactly
  one SELECT (or WITH ... SELECT), by sqlglot's parse *and* DuckDB's own
  (``extract_statements``, ``json_serialize_sql``, so what is checked is what
  runs), whose relations are all catalog relations (``RELATIONS``: pg_catalog,
  information_schema, the parties' empty tables, the statement's own CTEs), with
  no table function but ``unnest``/``generate_series``/``range``, no qualified
  function call and none of ``REFUSED_FUNCTIONS``.  Anything else raises
  :class:`CatalogAccessError` (SQLSTATE 42501) before DuckDB runs it;
* every client queries through its own cursor (:meth:`PgCatalog.cursor`) and a
  query that runs longer than ``QUERY_SECONDS`` is interrupted.
"""

from __future__ import annotations

import json
import re
import threading

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Federation

HINT = ("the catalog answers one SELECT over pg_catalog, information_schema and the parties' (empty) tables; "
        "files, table functions, settings and commands are not offered by sqlmpc pg. "
        "A question about the data names a party's table (FROM party.table alias)")

# DuckDB's settings for the catalog database; lock_configuration comes last and freezes them all.
SEAL = [
    "SET enable_external_access = false",          # no files, COPY, ATTACH, INSTALL/LOAD, replacement scans
    "SET disabled_filesystems = 'LocalFileSystem'",
    "SET autoload_known_extensions = false",
    "SET autoinstall_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET allow_persistent_secrets = false",
    "SET allow_extension_repositories = 'forbidden'",
    "SET python_enable_replacements = false",      # no Python variables read as tables
    "SET threads = 1",
    "SET max_memory = '256MB'",
    "SET lock_configuration = true",
]

QUERY_SECONDS = 10.0            # a catalog query running longer is interrupted
MAX_ROWS = 100_000              # a catalog answer with more rows is refused (psql's are a few hundred)
MAX_BYTES = 64 << 20            # ... and one of more bytes

# Table functions a catalog query may call: they compute, they read nothing.
SAFE_TABLE_FUNCTIONS = {"unnest", "generate_series", "range"}
# Scalar functions that read DuckDB's state or settings, or run SQL.
REFUSED_FUNCTIONS = {"getvariable", "getenv", "json_execute_serialized_sql", "query", "query_table",
                     "read_text", "read_blob", "which_secret", "sql_auto_complete", "checkpoint",
                     "force_checkpoint", "enable_logging", "disable_logging", "truncate_duckdb_logs"}
REFUSED_PREFIXES = ("duckdb_", "pragma_", "sqlite_")
# DuckDB's own pg_catalog views that describe DuckDB rather than the federation (settings, paths).
HIDDEN_RELATIONS = {"pg_settings", "pg_prepared_statements"}
# The node types of DuckDB's serialized SELECT (json_serialize_sql) a catalog query may contain.
_NODE_TYPES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE", "BASE_TABLE", "SUBQUERY",
               "JOIN", "TABLE_FUNCTION", "EXPRESSION_LIST", "EMPTY", "EMPTY_FROM", "ORDER_MODIFIER",
               "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER", "DISTINCT_MODIFIER"}


class CatalogAccessError(errors.PositionedError):
    """A statement the sealed catalog does not run (SQLSTATE 42501): not one SELECT over catalog relations."""

    def __init__(self, message: str):
        super().__init__(message, hint=HINT)


# Functions psql and BI tools call that DuckDB's pg_catalog does not define.
_MACROS = [
    "CREATE MACRO pg_get_userbyid(id) AS 'sqlmpc'",
    "CREATE MACRO pg_encoding_to_char(e) AS 'UTF8'",
    "CREATE MACRO obj_description(o, c) AS NULL",
    "CREATE MACRO pg_relation_is_publishable(c) AS false",
    "CREATE MACRO pg_get_statisticsobjdef_columns(o) AS NULL",
    "CREATE MACRO current_setting(name) AS CASE name WHEN 'server_version_num' THEN '150000' "
    "WHEN 'server_version' THEN '15.0' ELSE '' END",
    "CREATE MACRO pg_get_expr(e, r, pretty) AS NULL",
    "CREATE MACRO version() AS 'PostgreSQL 15.0 (sqlmpc)'",
    # Columns of PostgreSQL 15's catalog that DuckDB's views lack (psql's \\d reads them).
    "CREATE VIEW pg_class AS SELECT * EXCLUDE (relreplident, reloptions), false AS relforcerowsecurity, "
    "'d' AS relreplident, NULL::VARCHAR[] AS reloptions FROM pg_catalog.pg_class",
    "CREATE VIEW pg_namespace AS SELECT * FROM pg_catalog.pg_namespace WHERE nspname <> 'main'",
    "CREATE MACRO col_description(rel, num) AS (SELECT comment FROM duckdb_columns() "
    "WHERE table_oid = rel AND column_index = num)",      # the column's role (key, dimension, ...)
    "CREATE MACRO pg_backend_pid() AS 1",
    "CREATE MACRO sqlmpc_schema() AS 'public'",
    "CREATE MACRO pg_table_size(c) AS 0",
    "CREATE MACRO pg_relation_size(c) AS 0",
    "CREATE MACRO pg_total_relation_size(c) AS 0",
    "CREATE MACRO pg_size_pretty(n) AS '0 bytes'",
]

_REWRITES = [
    (re.compile(r"OPERATOR\(pg_catalog\.([~!<>=*]+)\)"), r"\1"),
    (re.compile(r"\s+COLLATE\s+pg_catalog\.\"?default\"?", re.I), ""),
    (re.compile(r"'([^']*)'::pg_catalog\.regclass", re.I), r"(SELECT oid FROM pg_class WHERE relname = '\1')"),
    (re.compile(r"::\s*pg_catalog\.(regclass|regtype|regproc|oid|text|name|char)\b", re.I), r"::\1"),
    (re.compile(r"::(regclass|regtype|regproc|oid|name|char)\b", re.I), "::VARCHAR"),
    (re.compile(r"\bpg_catalog\.", re.I), ""),       # our macros and views come before DuckDB's pg_catalog
    (re.compile(r"\bcurrent_database\s*\(\s*\)", re.I), "sqlmpc_database()"),
    (re.compile(r"\bcurrent_schema\s*\(\s*\)", re.I), "sqlmpc_schema()"),
]


def rewrite(sql: str) -> str:
    """A PostgreSQL catalog query in DuckDB's spelling."""
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    return sql


class PgCatalog:
    """An in-memory DuckDB holding the federation's tables, empty, for catalog queries; sealed after setup."""

    def __init__(self, federation: Federation):
        self.federation = federation
        self.con = duckdb.connect(":memory:")
        for statement in _MACROS:
            self.con.execute(statement)
        # The federation is the one database; the party data stays with the parties.
        name = federation.name.replace("'", "''")
        self.con.execute(f"CREATE MACRO sqlmpc_database() AS '{name}'")   # DuckDB's views use current_database()
        self.con.execute(
            f"CREATE VIEW pg_database AS SELECT 1 AS oid, '{name}' AS datname, 10 AS datdba, 6 AS encoding, "
            "'c' AS datlocprovider, false AS datistemplate, true AS datallowconn, -1 AS datconnlimit, "
            "'C' AS datcollate, 'C' AS datctype, NULL::VARCHAR AS daticulocale, NULL::VARCHAR AS daticurules, "
            "NULL::VARCHAR[] AS datacl")
        for table in federation.tables:
            schema = _ident(table.party)
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            columns = ", ".join(f"{_ident(c.name)} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in table.columns)
            name = f"{schema}.{_ident(table.name)}"
            self.con.execute(f"CREATE TABLE {name} ({columns})")
            for c in table.columns:
                role = getattr(c.role, "value", str(c.role))
                self.con.execute(f"COMMENT ON COLUMN {name}.{_ident(c.name)} IS '{role}'")
        self.parties = {p.lower() for p in federation.party_names}
        self.relations, self.unqualified = self._relations()
        for setting in SEAL:
            self.con.execute(setting)

    def _relations(self) -> tuple[set[tuple[str, str]], set[str]]:
        """The catalog relations: (schema, name) pairs, and the names usable without a schema."""
        rows = self.con.execute(
            "SELECT database_name, schema_name, view_name FROM duckdb_views() "
            "UNION ALL SELECT database_name, schema_name, table_name FROM duckdb_tables()").fetchall()
        qualified, unqualified = set(), set()
        for database, schema, name in rows:
            schema, name = schema.lower(), name.lower()
            if name in HIDDEN_RELATIONS or name.startswith(REFUSED_PREFIXES):
                continue
            if database == "system" and schema in ("pg_catalog", "information_schema"):
                qualified.add((schema, name))
                if schema == "pg_catalog":
                    unqualified.add(name)
            elif database == "memory" and (schema == "main" or schema in self.parties):
                qualified.add((schema, name))
                if schema == "main":
                    unqualified.add(name)
        return qualified, unqualified

    def cursor(self) -> "CatalogCursor":
        """One client's own connection to the catalog (close it when the client leaves)."""
        return CatalogCursor(self, self.con.cursor())

    # -- the allow-list ------------------------------------------------------------------

    def check(self, sql: str, con: duckdb.DuckDBPyConnection) -> bool:
        """Refuse (CatalogAccessError) anything but one SELECT over catalog relations.

        Returns True when the query reads a PostgreSQL catalog table DuckDB does not have
        (pg_policy, pg_inherits, ...): it describes something a federation has none of, and
        is answered with no rows, without running it.
        """
        missing = self._check_sqlglot(sql)
        try:
            parsed = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise CatalogQueryError(str(exc).splitlines()[0]) from None
        if len(parsed) != 1:
            raise CatalogAccessError(f"the catalog runs one statement at a time, not {len(parsed)}")
        if parsed[0].type != duckdb.StatementType.SELECT:
            raise CatalogAccessError(f"{parsed[0].type.name} statements are not allowed: the catalog is read-only")
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
        if tree.get("error") or len(tree.get("statements", [])) != 1:
            detail = tree.get("error_message", "")
            raise CatalogAccessError(f"the catalog runs one SELECT at a time{': ' + detail if detail else ''}")
        return self._check_duckdb(tree["statements"][0]) or missing

    def _relation(self, schema: str, name: str, ctes: set[str]) -> bool:
        """Whether a relation is in the catalog (False: a missing pg_ table); raises for anything else."""
        schema, name = schema.lower(), name.lower()
        if not schema and name in ctes:
            return True
        if schema in self.parties and (schema, name) in self.relations:
            raise CatalogAccessError(f'"{schema}.{name}" is a party\'s table: the catalog only describes it '
                                     "(information_schema.columns, \\d); its data is asked for through the federation")
        if (schema, name) in self.relations or (not schema and name in self.unqualified):
            return True
        if schema in ("", "pg_catalog") and name.startswith("pg_"):      # pg_policy, ..., and HIDDEN_RELATIONS
            return False
        shown = f"{schema}.{name}" if schema else name
        raise CatalogAccessError(f'relation "{shown}" is not in the catalog')

    def _check_sqlglot(self, sql: str) -> bool:
        try:
            trees = [t for t in sqlglot.parse(sql, read="duckdb") if t is not None]
        except sqlglot.errors.SqlglotError:
            return False                        # DuckDB's parse (below) decides
        if len(trees) != 1:
            raise CatalogAccessError(f"the catalog runs one statement at a time, not {len(trees)}")
        tree = trees[0]
        if not isinstance(tree, exp.Query):
            raise CatalogAccessError(f"{tree.key.upper()} statements are not allowed: the catalog is read-only")
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        found = True
        for table in tree.find_all(exp.Table):
            if not isinstance(table.this, exp.Identifier):
                function = table.this
                name = (function.name if isinstance(function, exp.Anonymous) else function.sql_name()).lower()
                if name not in SAFE_TABLE_FUNCTIONS and not isinstance(function, exp.GenerateSeries | exp.Unnest):
                    raise CatalogAccessError(f"table function {name}() is not allowed in a catalog query")
                continue
            if table.catalog:
                raise CatalogAccessError(f'relation "{table.sql("duckdb")}" is not in the catalog')
            found = self._relation(table.db, table.name, ctes) and found
        return not found

    def _check_duckdb(self, statement: dict) -> bool:
        ctes: set[str] = set()
        nodes: list = []

        def walk(node) -> None:
            if isinstance(node, list):
                for item in node:
                    walk(item)
            elif isinstance(node, dict):
                nodes.append(node)
                for key, value in node.items():
                    if key == "cte_map":
                        ctes.update(entry["key"].lower() for entry in value.get("map", []))
                    walk(value)

        walk(statement)
        missing = False
        for node in nodes:
            kind = node.get("type")
            if "function_name" in node and "class" in node:
                name = str(node["function_name"]).lower()
                if node.get("schema") or node.get("catalog"):
                    raise CatalogAccessError(f"function {node.get('schema') or node.get('catalog')}.{name}() "
                                             "is not allowed in a catalog query")
                if name in REFUSED_FUNCTIONS or name.startswith(REFUSED_PREFIXES):
                    raise CatalogAccessError(f"function {name}() is not allowed in a catalog query")
            if "class" in node or not isinstance(kind, str) or "alias" not in node and "modifiers" not in node:
                continue
            if kind not in _NODE_TYPES:
                raise CatalogAccessError(f"{kind.lower().replace('_', ' ')} is not allowed in a catalog query")
            if kind == "TABLE_FUNCTION":
                function = node["function"]
                name = str(function.get("function_name", "")).lower()
                if name not in SAFE_TABLE_FUNCTIONS or function.get("schema") or function.get("catalog"):
                    raise CatalogAccessError(f"table function {name}() is not allowed in a catalog query")
            elif kind == "BASE_TABLE":
                if node.get("catalog_name") or node.get("at_clause"):
                    raise CatalogAccessError(f'relation "{node.get("catalog_name")}.{node.get("schema_name")}.'
                                             f'{node.get("table_name")}" is not in the catalog')
                missing |= not self._relation(node.get("schema_name", ""), node["table_name"], ctes)
        return missing


class CatalogCursor:
    """One client's view of the sealed catalog: its own DuckDB cursor; the allow-list before every statement."""

    def __init__(self, catalog: PgCatalog, con: duckdb.DuckDBPyConnection):
        self.catalog = catalog
        self.con = con

    def close(self) -> None:
        try:
            self.con.close()
        except duckdb.Error:
            pass

    def _guarded(self, run):
        timer = threading.Timer(QUERY_SECONDS, self.con.interrupt)
        timer.start()
        try:
            return run()
        finally:
            timer.cancel()

    def query(self, sql: str, parameters: list | None = None) -> pa.Table:
        """Run a catalog query; raises CatalogAccessError for a refused one, duckdb.Error when DuckDB cannot.

        PostgreSQL catalog tables DuckDB does not have (pg_policy, pg_inherits, pg_publication, ...)
        describe things a federation has none of: a query on one is answered with no rows.
        """
        sql = rewrite(sql)
        if self.catalog.check(sql, self.con):
            return _empty_result(sql)
        table = self._guarded(lambda: self.con.sql(sql, params=parameters or None).limit(MAX_ROWS + 1)
                              .to_arrow_table())
        if table.num_rows > MAX_ROWS or table.nbytes > MAX_BYTES:
            raise CatalogLimitError(f"a catalog answer is limited to {MAX_ROWS} rows and {MAX_BYTES >> 20} MiB")
        return table

    def describe(self, sql: str) -> pa.Schema | None:
        """The columns a query would return (over the empty tables), checked like a query; raises duckdb.Error."""
        sql = rewrite(_PLACEHOLDER.sub("NULL", sql)).rstrip().rstrip(";")
        if self.catalog.check(sql, self.con):
            return _empty_result(sql).schema
        return self._guarded(lambda: self.con.sql(sql).limit(0).to_arrow_table().schema)


class CatalogQueryError(errors.ProgrammingError):
    """A statement that names no party's table and that the catalog cannot answer either."""


class CatalogLimitError(errors.ProgrammingError):
    """A catalog answer over MAX_ROWS or MAX_BYTES (SQLSTATE 54000, program_limit_exceeded)."""


_PLACEHOLDER = re.compile(r"\$(\d+)")


def _empty_result(sql: str) -> pa.Table:
    """No rows, with the query's column names (all text)."""
    try:
        names = sqlglot.parse_one(sql, read="duckdb").named_selects
    except sqlglot.errors.SqlglotError:
        names = []
    names = [n or f"column{i + 1}" for i, n in enumerate(names)]
    return pa.table({n: pa.array([], pa.string()) for n in dict.fromkeys(names)})


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")
