"""PostgreSQL and Spark as a party's sources: the local SQL runs inside them.

PostgreSQL is reached with ADBC (``adbc-driver-postgresql``), whose result is an
Arrow stream read batch by batch; each query opens a fresh read-only connection
(so a database restarted between queries serves the next one).  Spark runs the
SQL in the party's own SparkSession (local mode or a cluster's master); its
result comes back with ``DataFrame.toArrow()``.

Every failure becomes a ``SourceError`` naming the party and the source; the
password is read when connecting (environment variable or file) and scrubbed
from every message.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator

import pyarrow as pa
import sqlglot
from sqlglot import exp

from sqlmpc.catalog import Connection, Role, Table, spark_conf_allowed
from sqlmpc import errors
from sqlmpc.errors import ConfigError, DataFileError, SourceError
from sqlmpc.local.data import _checks, _col, _ident, match_columns, too_many_rows
from sqlmpc.local.sources.pushdown import DIALECTS, normalize, table_relation, transpile

CONNECT_TIMEOUT = 5          # seconds: an unreachable database fails the query quickly


def _duckdb_type(t: pa.DataType) -> str:
    """The DuckDB name of an engine column's Arrow type (to compare with the catalog's)."""
    if isinstance(t, pa.ExtensionType):
        return "DECIMAL" if getattr(t, "type_name", "") == "numeric" else str(t)
    names = {pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
             pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR", pa.large_string(): "VARCHAR",
             pa.date32(): "DATE", pa.bool_(): "BOOLEAN"}
    if pa.types.is_decimal(t):
        return "DECIMAL"
    return names.get(t, str(t).upper())


class EngineSource:
    """What PostgreSQL and Spark share: transpiling, validation by SQL, error wrapping."""

    kind = ""       # "postgresql" | "spark"
    label = ""      # names the source in messages: kind and where (never a password)

    def __init__(self, party: str, connection: Connection):
        self.party = party
        self.connection = connection
        self.found: dict[str, dict[str, str]] = {}      # table -> catalog column (lower) -> engine column

    # -- engine-specific --------------------------------------------------------
    def _batches(self, sql: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Run SQL in the engine's dialect: the result's schema and its batches."""
        raise NotImplementedError

    def _secrets(self) -> list[str]:
        return []

    # -- the interface ---------------------------------------------------------------
    def prepare(self, sql: str, tables: dict[tuple[str, str], Table] | None = None) -> str:
        """The local part's DuckDB SQL in the engine's dialect, reading the engine's tables."""
        tables = tables or {}
        relations = {name: table_relation(t, self.found.get(t.qualified_name) or
                                          {c.name.lower(): c.name.lower() for c in t.columns}, self.kind)
                     for name, t in tables.items() if t.kind == self.kind}
        return transpile(sql, self.kind, relations)

    def run(self, sql: str, keys: set[str], tables: dict[tuple[str, str], Table]) -> Iterator[pa.RecordBatch]:
        """The local part run by the engine, batch by batch, as the party's DuckDB would give it."""
        names = sqlglot.parse_one(sql, read="duckdb").named_selects
        schema, batches = self._guarded(self._batches, self.prepare(sql, tables))
        produced = False
        for batch in self._stream(batches):
            produced = True
            yield normalize(batch, names, keys)
        if not produced:
            yield normalize(pa.RecordBatch.from_pylist([], schema=schema), names, keys)

    def validate(self, table: Table) -> None:
        """The catalog's rules checked by the engine: one scan for the per-row rules, one GROUP BY per unique key."""
        found = self._columns(table)
        scan = exp.select(*(exp.column(exp.to_identifier(found[c.name.lower()], quoted=True)).as_(_ident(c.name))
                            for c in table.columns)).from_(self._table(table)).subquery("scan")
        checks = _checks(table, set())
        if checks:
            items = []
            for check in checks:
                hit = exp.Case(ifs=[exp.If(this=check.condition, true=exp.Literal.number(1))],
                               default=exp.Literal.number(0))
                items += [exp.Sum(this=hit), exp.Min(this=exp.Case(ifs=[exp.If(this=check.condition.copy(),
                                                                                  true=check.value)]))]
            result = self._fetch(exp.select(*items).from_(scan.copy()))[0]
            for i, check in enumerate(checks):
                count, value = result[2 * i: 2 * i + 2]
                if count:
                    message, withheld = check.messages(value, int(count))
                    raise DataFileError(message, table=table.qualified_name, column=check.column.name,
                                        source=self.where(table), withheld=withheld)
        for column in table.columns:
            if column.role is Role.KEY and (column.unique or column.max_rows):
                self._check_rows_per_key(table, scan, column)

    def where(self, table: Table) -> str:
        return f"{self.label}, table {table.source_table}"

    # -- helpers ---------------------------------------------------------------------
    def _table(self, table: Table) -> exp.Table:
        return sqlglot.parse_one(table.source_table, into=exp.Table, read=DIALECTS[self.kind])

    def _fetch(self, query: exp.Expression) -> list[tuple]:
        _, batches = self._guarded(self._batches, transpile(query.sql("duckdb"), self.kind, {}))
        return [row for batch in self._stream(batches) for row in zip(*(c.to_pylist() for c in batch.columns))]

    def _stream(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        it = iter(batches)
        while True:
            batch = self._guarded(next, it, None)
            if batch is None:
                return
            yield batch

    def _columns(self, table: Table) -> dict[str, str]:
        """Catalog column (lower-case) -> the engine's column; checks presence and type. Extra columns are fine."""
        schema, batches = self._guarded(self._batches, f"SELECT * FROM {self._table(table).sql(DIALECTS[self.kind])} "
                                                       "WHERE 1 = 0")
        for _ in self._stream(batches):      # nothing: read to the end, which closes the connection
            pass
        found = match_columns(table, [(f.name, _duckdb_type(f.type)) for f in schema], holder="table",
                              source=self.where(table))
        self.found[table.qualified_name] = found
        return found

    def _check_rows_per_key(self, table: Table, scan: exp.Subquery, column) -> None:
        key = _col(column.name)
        limit = column.rows_per_key
        per_key = (exp.select(exp.Count(this=exp.Star()).as_("n"), key.copy().as_("k")).from_(scan.copy())
                   .where(exp.Not(this=exp.Is(this=key.copy(), expression=exp.Null())))
                   .group_by(key.copy()).having(exp.GT(this=exp.Count(this=exp.Star()),
                                                       expression=exp.Literal.number(limit))))
        excess = exp.select(exp.Sum(this=exp.Sub(this=exp.column("n"), expression=exp.Literal.number(limit))),
                            exp.Min(this=exp.column("k"))).from_(per_key.subquery("per_key"))
        extra, value = self._fetch(excess)[0]
        if extra:
            message, withheld = too_many_rows(value, int(extra), column)
            raise DataFileError(message, table=table.qualified_name, column=column.name, source=self.where(table),
                                withheld=withheld)

    def _guarded(self, fn, *args):
        """Call into the engine; its failures become a SourceError without any secret in it."""
        try:
            return fn(*args)
        except (DataFileError, SourceError):
            raise
        except Exception as exc:  # the drivers raise their own classes (ADBC, py4j, pyspark)
            raise SourceError(self._message(exc), party=self.party, source=self.label,
                              withheld=f"the database failed ({type(exc).__name__}; {errors.WITHHELD})") from None

    def _message(self, exc: Exception) -> str:
        text = str(exc).strip() or type(exc).__name__
        text = re.sub(r"Failed to execute query '.*?': ", "", text, flags=re.DOTALL)
        text = re.sub(r"\s*JVM stacktrace:.*", "", text, flags=re.DOTALL)
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, "***")
        return " ".join(text.split())[:600]

    def close(self) -> None:
        pass


class PostgresSource(EngineSource):
    kind = "postgresql"

    def __init__(self, party: str, connection: Connection):
        super().__init__(party, connection)
        self.password: str | None = None
        try:
            params = self._params(with_password=False)
        except Exception:
            params = {}
        where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
        self.label = f"postgresql {where}"

    def _dsn(self) -> str:
        c = self.connection
        dsn = c.dsn if c.dsn is not None else os.environ.get(c.dsn_env or "")
        if dsn is None:
            raise SourceError(f"the environment variable {c.dsn_env} (the DSN) is not set",
                              party=self.party, source="postgresql")
        return dsn

    def _parse(self, dsn: str) -> dict:
        """The DSN's parameters; a DSN that does not parse is refused without quoting it (the parser's
        message would: the text may be anything an environment variable holds)."""
        from psycopg.conninfo import conninfo_to_dict    # lazy: optional extra [sources]; ~260 ms to import

        try:
            return conninfo_to_dict(dsn)
        except Exception:   # noqa: BLE001 - psycopg.ProgrammingError quotes the text
            origin = (f"the environment variable {self.connection.dsn_env}" if self.connection.dsn is None
                      else "the local file's 'dsn'")
            raise SourceError(f"the DSN in {origin} is not a libpq URI or key=value connection string",
                              party=self.party, source="postgresql") from None

    def _params(self, *, with_password: bool) -> dict:
        params = self._parse(self._dsn())
        params.pop("password", None)     # only ever password_env / password_file (never in a DSN)
        if with_password:
            # The password goes only to this DSN's host: the DSN and the password's origin both come
            # from the party's own local file (catalog.load_federation), never the shared file.
            self.password = self._password()
            if self.password is not None:
                params["password"] = self.password
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        params["options"] = "-c default_transaction_read_only=on"    # the local SQL only reads
        return params

    def _password(self) -> str | None:
        c = self.connection
        if c.password_env:
            value = os.environ.get(c.password_env)
            if value is None:
                raise SourceError(f"the environment variable {c.password_env} (the password) is not set",
                                  party=self.party, source=self.label)
            return value
        if c.password_file:
            try:
                return open(c.password_file, encoding="utf-8").read().strip()
            except OSError as exc:
                raise SourceError(f"cannot read the password file {c.password_file}: {exc.strerror}",
                                  party=self.party, source=self.label) from None
        return None

    # DSN parameters a message may name: they say which database failed (the source's label).
    SHOWN_PARAMS = frozenset({"host", "hostaddr", "port", "dbname", "user", "connect_timeout", "options"})

    def _secrets(self) -> list[str]:
        """Texts scrubbed from every message: the password, the DSN as written and any of its values but
        where the database is (an environment variable holds whatever its owner put in it)."""
        secrets = [self.password] if self.password else []
        try:
            dsn = self._dsn()
        except SourceError:
            return secrets
        secrets.append(dsn)
        try:
            params = self._parse(dsn)
        except SourceError:
            return secrets
        secrets += [str(v) for k, v in params.items() if k not in self.SHOWN_PARAMS and len(str(v)) >= 4]
        return sorted(secrets, key=len, reverse=True)

    def _batches(self, sql: str):
        import adbc_driver_postgresql.dbapi as adbc     # lazy: optional extra [sources]; ~1 s to import
        from psycopg.conninfo import make_conninfo      # lazy: optional extra [sources]

        connection = adbc.connect(make_conninfo(**self._params(with_password=True)))
        cursor = connection.cursor()
        cursor.execute(sql)
        reader = cursor.fetch_record_batch()

        def batches():
            try:
                yield from reader
            finally:
                cursor.close()
                connection.close()
        return reader.schema, batches()


class SparkSource(EngineSource):
    """The party's SparkSession, one per process.  The JVM's start-up is the slow part (10-60 s):
    it starts in the background when the party starts, and the first query waits for it."""

    kind = "spark"

    def __init__(self, party: str, connection: Connection):
        super().__init__(party, connection)
        for key, _ in connection.conf:     # the local file's loader checks too; never quote the value
            if not spark_conf_allowed(key):
                raise ConfigError(f"party '{party}': Spark setting '{key}' is not allowed (sqlmpc.catalog."
                                  "SPARK_CONF_ALLOWED: settings that load jars or pass JVM options would run code)")
        self.label = f"spark {connection.master}"
        self._session = None
        self._starting = threading.Thread(target=self._start_in_background, name=f"spark-{party}", daemon=True)
        self._starting.start()

    def _start_in_background(self) -> None:
        try:
            self._session = self._start()
        except Exception:   # noqa: BLE001 - retried (and reported) when a query needs the session
            pass

    @property
    def session(self):
        self._starting.join()
        if self._session is None:
            self._session = self._guarded(self._start)
        return self._session

    def _start(self):
        from pyspark.sql import SparkSession     # lazy: optional extra [sources]; ~240 ms to import

        builder = (SparkSession.builder.master(self.connection.master).appName(f"sqlmpc-{self.party}")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "2")
                   .config("spark.sql.ansi.enabled", "true"))
        for key, value in self.connection.conf:
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        return session

    def _batches(self, sql: str):
        table = self.session.sql(sql).toArrow()
        return table.schema, iter(table.to_batches())
