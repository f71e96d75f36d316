"""PEP 249 (DB-API 2.0) driver: ``import sqlmpc; con = sqlmpc.connect()``.

``connect()`` with no arguments starts the embedded demo federation (one
process per party on loopback).  ``connect(federation="fed.toml")`` runs a
federation file's parties embedded; ``oracle=True`` runs the plaintext
oracle instead (a dry run on synthetic data: no privacy at all);
``connect("sqlmpc://host:port")`` reaches a party node of a networked
federation.  Each is a *backend* of the one :class:`Connection`: an object with
``federation``, ``dry_run``, ``query(query, params, progress) -> Result``,
``last_stats``, ``restart()`` and ``close()``.

Beyond PEP 249: ``Cursor.fetch_arrow_table()``, ``Cursor.fetchdf()``,
``Cursor.suppressed`` (one flag per result row: the cell was suppressed, its
values are None), ``Cursor.perturbed`` (the columns whose values
carry cell-key noise, docs/disclosure.md) and ``Cursor.leakage`` (what the secure
computation opened besides the result).
"""

from __future__ import annotations

import datetime
import time as _time
from pathlib import Path

import duckdb
import pyarrow as pa

from sqlmpc import errors, metadata
from sqlmpc.catalog import Federation, load_federation
from sqlmpc.errors import (  # noqa: F401 - part of the PEP 249 module interface
    DatabaseError, DataError, Error, IntegrityError, InterfaceError, InternalError,
    NotSupportedError, OperationalError, ProgrammingError, Warning,
)
from sqlmpc.oracle import OracleBackend
from sqlmpc.output import SUPPRESSED_COLUMN
from sqlmpc.party.client import RemoteConnection, is_url
from sqlmpc.party.embedded import EmbeddedFederation, demo_federation_path
from sqlmpc.result import Result
from sqlmpc.sql import Explain, Query, parse

apilevel = "2.0"
threadsafety = 1          # threads may share the module, not connections
paramstyle = "qmark"


# --------------------------------------------------------------------------
# Type objects and constructors (PEP 249).  A column's type code in
# ``Cursor.description`` is its Arrow type as a string ("int64", "double",
# "string", "date32[day]", ...); it compares equal to one of these objects.


class DBAPITypeObject:
    def __init__(self, name: str, *prefixes: str):
        self.name = name
        self.prefixes = prefixes

    def __eq__(self, other):
        if isinstance(other, DBAPITypeObject):
            return self is other
        return isinstance(other, str) and other.startswith(self.prefixes)

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"<sqlmpc type {self.name}>"


STRING = DBAPITypeObject("STRING", "string", "large_string")
BINARY = DBAPITypeObject("BINARY", "binary", "large_binary", "fixed_size_binary")
NUMBER = DBAPITypeObject("NUMBER", "int", "uint", "float", "halffloat", "double", "decimal", "bool")
DATETIME = DBAPITypeObject("DATETIME", "date", "time", "timestamp", "duration")
ROWID = DBAPITypeObject("ROWID")          # sqlmpc has no row ids

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 - PEP 249 name
    return Date(*_time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802
    return Time(*_time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802
    return Timestamp(*_time.localtime(ticks)[:6])


# --------------------------------------------------------------------------


def connect(federation: str | Path | Federation | None = None, *, oracle: bool = False, timeout: float = 30.0,
            persons: int = 5000, token: str | None = None, ca=None) -> "Connection":
    """Connect to a federation (a TOML file, or one loaded) or, with no argument, to the embedded demo.

    ``connect("sqlmpc://host:port", token=..., ca="ca.pem")`` reaches a running party node.
    """
    if is_url(federation):
        return Connection(RemoteConnection(federation, token=token, ca=ca))
    if not isinstance(federation, Federation):
        federation = load_federation(Path(federation) if federation is not None else demo_federation_path(persons))
    return Connection(OracleBackend(federation) if oracle else EmbeddedFederation(federation, timeout=timeout))


class Connection:
    """A connection to one federation through a backend (embedded, remote or the oracle's dry run)."""

    def __init__(self, backend):
        self._backend = backend
        self.federation = backend.federation
        self._closed = False

    @property
    def oracle(self) -> bool:
        """True for a dry run in the clear (the oracle backend): no privacy at all."""
        return self._backend.dry_run

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InterfaceError("the connection is closed")

    def run(self, sql: str, parameters=None, progress=None) -> Result:
        """Run one statement and return its whole result (the engine under ``Cursor.execute``)."""
        self._check_open()
        statement = parse(sql)
        if not isinstance(statement, Query):
            if parameters:
                raise errors.ProgrammingError("parameters are only allowed in a SELECT")
            result = metadata.run_metadata(self.federation, statement)    # SHOW, DESCRIBE, EXPLAIN
            if result is not None:
                return result
            if isinstance(statement, Explain):                             # EXPLAIN ANALYZE: run it too
                plan = metadata.explain_text(self.federation, statement)
                run = self._query(statement.query)
                stats = self._backend.last_stats
                return metadata.explain_result(metadata.analyze_text(plan, run, stats))
            raise errors.NotSupportedError(f"unsupported statement {type(statement).__name__}")
        # Parameter values become literals in the parsed tree (sqlglot renders and escapes them).
        return self._query(statement, parameters, progress)

    def _query(self, query: Query, parameters=None, progress=None) -> Result:
        try:
            return self._backend.query(query, parameters, progress=progress)
        except errors.Error:
            raise
        except OSError as exc:      # a party's pipe or socket broke
            raise errors.OperationalError(f"lost contact with a party: {exc}") from exc
        except Exception as exc:    # a bug: still a DB-API error, with its cause chained
            if _interrupted(exc):
                raise KeyboardInterrupt from exc
            raise errors.InternalError(f"{type(exc).__name__}: {exc}") from exc

    def restart(self) -> None:
        """Stop the embedded parties and start them afresh (after a cancelled or failed query)."""
        self._check_open()
        self._backend.restart()

    def cursor(self) -> "Cursor":
        self._check_open()
        return Cursor(self)

    def execute(self, sql: str, parameters=None) -> "Cursor":
        """Shortcut (as in sqlite3 and DuckDB): a new cursor that has run ``sql``."""
        return self.cursor().execute(sql, parameters)

    def commit(self) -> None:
        """sqlmpc is read-only: nothing to commit."""
        self._check_open()

    def rollback(self) -> None:
        self._check_open()
        raise errors.NotSupportedError("sqlmpc is read-only: there are no transactions to roll back")

    def close(self) -> None:
        if not self._closed:
            self._backend.close()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Cursor:
    def __init__(self, connection: Connection):
        self.connection = connection
        self.arraysize = 1
        self._result: Result | None = None
        self._rows: list[tuple] = []
        self._pos = 0
        self._closed = False
        self.leakage: list = []

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InterfaceError("the cursor is closed")
        self.connection._check_open()

    def _check_result(self) -> None:
        self._check_open()
        if self._result is None:
            raise errors.ProgrammingError("no result to fetch: call execute() first")

    @property
    def description(self):
        """One 7-tuple per column: (name, type_code, None, None, None, None, True).

        ``type_code`` is the Arrow type as a string; it equals ``STRING``,
        ``NUMBER`` or ``DATETIME``.  Every column may be NULL (suppressed cells).
        """
        if self._result is None:
            return None
        return [(f.name, str(f.type), None, None, None, None, True) for f in self._result.table.schema]

    @property
    def rowcount(self) -> int:
        return -1 if self._result is None else len(self._rows)

    @property
    def rownumber(self) -> int | None:
        return None if self._result is None else self._pos

    @property
    def suppressed(self) -> list[bool]:
        """Per result row: True when the cell was suppressed — fewer than k persons, a dominant
        contributor, or protecting another cell (its values are None)."""
        return [] if self._result is None else list(self._result.suppressed)

    @property
    def perturbed(self) -> list[str]:
        """The columns of the last result whose values carry cell-key noise (docs/disclosure.md)."""
        return [] if self._result is None else self._result.perturbed

    def execute(self, sql: str, parameters=None, *, progress=None) -> "Cursor":
        """Run ``sql``; ``progress(stage)`` (optional) hears each secure stage as it starts."""
        self._check_open()
        self._result = None
        self._rows, self._pos, self.leakage = [], 0, []
        result = self.connection.run(sql, parameters, progress=progress)
        self._result = result
        self._rows = result.rows()
        self.leakage = list(result.leakage)
        return self

    def executemany(self, sql: str, seq_of_parameters) -> "Cursor":
        """Run ``sql`` once per parameter sequence; the last result stays fetchable."""
        for parameters in seq_of_parameters:
            self.execute(sql, parameters)
        return self

    def fetchone(self):
        self._check_result()
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchmany(self, size: int | None = None):
        self._check_result()
        size = self.arraysize if size is None else size
        out = self._rows[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def fetchall(self):
        self._check_result()
        out = self._rows[self._pos:]
        self._pos = len(self._rows)
        return out

    def fetch_arrow_table(self) -> pa.Table:
        """The rows not fetched yet, as an Arrow table (suppressed cells are null)."""
        self._check_result()
        out = self._result.table.slice(self._pos)
        self._pos = len(self._rows)
        return out

    def fetchdf(self):
        """The rows not fetched yet, as a pandas DataFrame (suppressed cells are NaN/None).

        The last column, ``_suppressed``, flags the rows whose cells were withheld.
        """
        start = self._pos
        table = self.fetch_arrow_table()
        flags = pa.array(self._result.suppressed[start:start + table.num_rows], pa.bool_())
        try:
            return table.append_column(SUPPRESSED_COLUMN, flags).to_pandas()
        except ImportError as exc:
            raise errors.InterfaceError(f"fetchdf() needs pandas: pip install 'sqlmpc[pandas]' ({exc})") from None

    def setinputsizes(self, sizes) -> None:
        pass

    def setoutputsize(self, size, column=None) -> None:
        pass

    def callproc(self, procname, parameters=None):
        raise errors.NotSupportedError("sqlmpc has no stored procedures")

    def nextset(self):
        raise errors.NotSupportedError("sqlmpc returns one result set per statement")

    def close(self) -> None:
        self._result = None
        self._rows = []
        self._closed = True

    def __iter__(self):
        return self

    def __next__(self):
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _interrupted(exc: Exception) -> bool:
    """DuckDB turns a Ctrl-C that arrives while it runs (in this process) into an exception of its own."""
    return isinstance(exc, duckdb.InterruptException) or (isinstance(exc, RuntimeError)
                                                          and str(exc) == "Query interrupted")
