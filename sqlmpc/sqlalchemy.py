"""SQLAlchemy 2.x dialect ``sqlmpc://`` so that pandas and BI tools can query a federation.

    create_engine("sqlmpc://")                      the embedded demo federation
    create_engine("sqlmpc:///path/to/fed.toml")     a federation file's parties, embedded

Parties are schemas, their tables are tables; the federation is read-only.
pandas works through ``pandas.read_sql(text(sql), engine)``; Core
``select()`` statements compile to the sqlmpc dialect (a table of a party is
rendered ``party.table AS table`` and its columns ``table.column``, as the
dialect names columns by alias, never by three-part names).
"""

from __future__ import annotations

from sqlalchemy import types as sqltypes
from sqlalchemy.engine import default
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql import compiler
from sqlalchemy.sql.schema import Table

from sqlmpc import dbapi

_TYPES = {"INTEGER": sqltypes.Integer, "BIGINT": sqltypes.BigInteger, "DOUBLE": sqltypes.Float,
          "VARCHAR": sqltypes.String, "DATE": sqltypes.Date, "BOOLEAN": sqltypes.Boolean}


class SqlmpcCompiler(compiler.SQLCompiler):
    def visit_table(self, table, asfrom=False, enclosing_alias=None, **kw):
        text = super().visit_table(table, asfrom=asfrom, enclosing_alias=enclosing_alias, **kw)
        aliased = enclosing_alias is not None and enclosing_alias.element is table
        if asfrom and table.schema and not aliased and kw.get("use_schema", True):
            text += " AS " + self.preparer.quote(table.name)
        return text

    def limit_clause(self, select, **kw):
        # The dialect takes LIMIT/OFFSET as numbers in the text, not as parameters ('LIMIT ?').
        kw = {**kw, "literal_binds": True}
        text = ""
        if select._limit_clause is not None:
            text += "\n LIMIT " + self.process(select._limit_clause, **kw)
        if select._offset_clause is not None:
            text += "\n OFFSET " + self.process(select._offset_clause, **kw)
        return text

    def visit_column(self, column, include_table=True, **kw):
        text = super().visit_column(column, include_table=include_table, **kw)
        table = column.table
        if include_table and isinstance(table, Table) and table.schema:
            prefix = self.preparer.quote_schema(table.schema) + "."
            text = text.removeprefix(prefix)
        return text


class SqlmpcDialect(default.DefaultDialect):
    name = "sqlmpc"
    statement_compiler = SqlmpcCompiler
    driver = "sqlmpc"
    supports_statement_cache = True
    supports_native_boolean = True
    supports_alter = False
    supports_sequences = False
    postfetch_lastrowid = False
    default_paramstyle = "qmark"

    @classmethod
    def import_dbapi(cls):
        return dbapi

    @classmethod
    def dbapi(cls):                     # SQLAlchemy 1.4 (e.g. under Superset); 2.x calls import_dbapi
        return dbapi

    def create_connect_args(self, url):
        kwargs = {}
        if url.database:
            kwargs["federation"] = url.database
        if "persons" in url.query:
            kwargs["persons"] = int(url.query["persons"])
        if url.query.get("oracle") in ("1", "true"):
            kwargs["oracle"] = True
        return [], kwargs

    # The federation is read-only and has no transactions or isolation levels.
    def do_rollback(self, dbapi_connection):
        pass

    def do_commit(self, dbapi_connection):
        pass

    def get_isolation_level(self, dbapi_connection):
        return "AUTOCOMMIT"

    def get_default_isolation_level(self, dbapi_conn):
        return "AUTOCOMMIT"

    def _get_default_schema_name(self, connection):
        return None

    def _get_server_version_info(self, connection):
        return (0, 1, 0)

    def do_ping(self, dbapi_connection):
        return True

    @staticmethod
    def _federation(connection):
        return connection.connection.dbapi_connection.federation

    def get_schema_names(self, connection, **kw):
        return list(self._federation(connection).party_names)

    def get_table_names(self, connection, schema=None, **kw):
        """The tables of party ``schema``; there is no default schema, so none without one."""
        party = self._federation(connection).party(schema) if schema else None
        return [t.name for t in party.tables] if party else []

    def has_table(self, connection, table_name, schema=None, **kw):
        party, _, name = (f"{schema}.{table_name}" if schema else table_name).rpartition(".")
        return self._federation(connection).table(party, name) is not None

    def get_columns(self, connection, table_name, schema=None, **kw):
        fed = self._federation(connection)
        party, _, name = (f"{schema}.{table_name}" if schema else table_name).rpartition(".")
        table = fed.table(party, name)
        if table is None:
            raise NoSuchTableError(table_name)
        return [{"name": c.name, "type": _TYPES.get(c.type, sqltypes.String)(), "nullable": c.nullable,
                 "default": None, "comment": c.role.value} for c in table.columns]

    def get_view_names(self, connection, schema=None, **kw):
        return []

    def get_pk_constraint(self, connection, table_name, schema=None, **kw):
        return {"constrained_columns": [], "name": None}

    def get_foreign_keys(self, connection, table_name, schema=None, **kw):
        return []

    def get_indexes(self, connection, table_name, schema=None, **kw):
        return []
