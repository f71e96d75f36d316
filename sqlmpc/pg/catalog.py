"""Answers to the catalog queries that psql (``\\dt``, ``\\d``) and BI tools send.

Parties are schemas and their tables are empty DuckDB tables of the same
columns and types, so DuckDB's own ``pg_catalog`` and ``information_schema``
views describe the federation.  PostgreSQL-only spellings in the clients'
queries (``OPERATOR(pg_catalog.~)``, ``COLLATE pg_catalog.default``, casts to
``regclass``) are rewritten, and the functions DuckDB lacks are macros.
No query here ever touches a party's data.
"""

from __future__ import annotations

import re
import threading

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from sqlmpc.catalog import Federation

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
    """An in-memory DuckDB holding the federation's tables, empty, for catalog queries."""

    def __init__(self, federation: Federation):
        self.federation = federation
        self._lock = threading.Lock()
        self.con = duckdb.connect()
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

    def query(self, sql: str, parameters: list | None = None) -> pa.Table:
        """Run a catalog query; raises duckdb.Error when DuckDB cannot answer it.

        PostgreSQL catalog tables DuckDB does not have (pg_policy, pg_inherits, pg_publication, ...)
        describe things a federation has none of: a query on one is answered with no rows.
        """
        sql = rewrite(sql)
        with self._lock:
            try:
                return self.con.sql(sql, params=parameters or None).to_arrow_table()
            except duckdb.CatalogException as exc:
                missing = _MISSING_TABLE.search(str(exc))
                if not missing or not missing.group(1).lower().startswith("pg_"):
                    raise
                return _empty_result(sql)

    def describe(self, sql: str) -> pa.Schema:
        """The columns a query would return (over the empty tables); raises duckdb.Error."""
        with self._lock:
            return self.con.sql(f"SELECT * FROM ({rewrite(sql).rstrip().rstrip(';')}) LIMIT 0").to_arrow_table().schema


_MISSING_TABLE = re.compile(r"Table with name (\w+) does not exist")


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
