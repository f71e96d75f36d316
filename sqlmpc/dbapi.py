"""PEP 249 (DB-API 2.0) driver: ``import sqlmpc; con = sqlmpc.connect()``.

``connect()`` with no arguments starts the embedded demo federation (one
process per party on loopback).  ``connect(federation="fed.toml")`` runs a
federation file's parties embedded; ``oracle=True`` runs the plaintext
oracle instead (a dry run on synthetic data: no privacy at all).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from sqlmpc import errors
from sqlmpc.errors import (  # noqa: F401 - part of the PEP 249 module interface
    DatabaseError, DataError, Error, IntegrityError, InterfaceError, InternalError,
    NotSupportedError, OperationalError, ProgrammingError, Warning,
)
from sqlmpc.result import Result

apilevel = "2.0"
threadsafety = 1          # threads may share the module, not connections
paramstyle = "qmark"


def connect(federation: str | Path | None = None, *, oracle: bool = False, timeout: float = 30.0,
            persons: int = 5000) -> "Connection":
    from sqlmpc.catalog import load_federation
    from sqlmpc.party.embedded import demo_federation_path

    path = Path(federation) if federation is not None else demo_federation_path(persons)
    return Connection(load_federation(path), oracle=oracle, timeout=timeout)


class Connection:
    def __init__(self, federation, *, oracle: bool = False, timeout: float = 30.0):
        self.federation = federation
        self.oracle = oracle
        self._backend = None
        if not oracle:
            from sqlmpc.party.embedded import EmbeddedFederation
            self._backend = EmbeddedFederation(federation, timeout=timeout)
        self._closed = False

    def run(self, sql: str, parameters=None) -> Result:
        if self._closed:
            raise errors.InterfaceError("the connection is closed")
        if parameters:
            from sqlmpc.sql import parse_query
            from sqlmpc.sql.params import bind_parameters
            # Values become literals in the tree; sqlglot renders (and escapes) them.
            sql = bind_parameters(parse_query(sql), parameters).sql("duckdb")
        if self.oracle:
            from sqlmpc.oracle import run_oracle
            return run_oracle(sql, self.federation)
        return self._backend.query(sql)

    def cursor(self) -> "Cursor":
        return Cursor(self)

    def execute(self, sql: str, parameters=None) -> "Cursor":
        return self.cursor().execute(sql, parameters)

    def commit(self) -> None:
        """sqlmpc is read-only: nothing to commit."""

    def rollback(self) -> None:
        raise errors.NotSupportedError("sqlmpc is read-only: there are no transactions to roll back")

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Cursor:
    arraysize = 1

    def __init__(self, connection: Connection):
        self.connection = connection
        self._result: Result | None = None
        self._rows: list[tuple] = []
        self._pos = 0
        self.leakage: list = []

    @property
    def description(self):
        if self._result is None:
            return None
        return [(f.name, str(f.type), None, None, None, None, True) for f in self._result.table.schema]

    @property
    def rowcount(self) -> int:
        return -1 if self._result is None else len(self._rows)

    @property
    def suppressed(self) -> list[bool]:
        return [] if self._result is None else self._result.suppressed

    def execute(self, sql: str, parameters=None) -> "Cursor":
        self._result = self.connection.run(sql, parameters)
        self._rows = self._result.rows()
        self._pos = 0
        self.leakage = self._result.leakage
        return self

    def executemany(self, sql: str, seq_of_parameters) -> "Cursor":
        for parameters in seq_of_parameters:
            self.execute(sql, parameters)
        return self

    def fetchone(self):
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchmany(self, size: int | None = None):
        size = self.arraysize if size is None else size
        out = self._rows[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    def fetchall(self):
        out = self._rows[self._pos:]
        self._pos = len(self._rows)
        return out

    def fetch_arrow_table(self) -> pa.Table:
        return self._result.table

    def fetchdf(self):
        return self._result.table.to_pandas()

    def close(self) -> None:
        self._result = None

    def __iter__(self):
        return iter(self.fetchone, None)
