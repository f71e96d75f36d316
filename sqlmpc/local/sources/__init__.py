"""Where a party's tables live: files read by its DuckDB, PostgreSQL, or Spark.

One narrow interface, so that the rest of the pipeline does not care where a
table lives.  A source

* ``prepare(sql)`` — the local part's DuckDB SQL as this source will run it
  (refused with ``NotSupportedError`` if the engine cannot express it; called
  when the party admits a plan, before anything runs);
* ``run(sql, keys)`` — runs it *inside* the engine and yields the result as Arrow
  record batches (only the local result crosses into the party's process);
* ``validate(table)`` — checks the table against the catalog with SQL run by the
  engine (``DataFileError``: table, column, a sample value, how many rows).

``LocalData`` holds a party's sources and runs each local part where its tables
are.  A local part must read tables of one source only (the planner joins a
party's own tables locally): a part spanning sources is refused at admission.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from sqlmpc.catalog import Federation, Table
from sqlmpc.errors import ConfigError, NotSupportedError
from sqlmpc.local.data import open_party_database, seal
from sqlmpc.local.sources.engines import PostgresSource, SparkSource
from sqlmpc.local.sources.pushdown import ENGINE_NAMES

BATCH_ROWS = 65_536


@dataclass
class Transfer:
    """What crossed from a source engine into the party's process for one local part."""

    source: str = ""
    rows: int = 0
    bytes: int = 0
    batches: int = 0
    seconds: float = 0.0


class FileSource:
    """Parquet, CSV and DuckDB files, loaded into the party's DuckDB and sealed (today's path)."""

    kind = "file"
    label = "files"

    def __init__(self, federation: Federation, party: str):
        tables = [t for t in federation.party(party).tables if t.kind == "file"]
        files_only = replace(federation, parties=tuple(
            replace(p, tables=tuple(tables)) if p.name == party else p for p in federation.parties))
        self.con: duckdb.DuckDBPyConnection = open_party_database(files_only, party)   # validates every file
        seal(self.con, tables)

    def prepare(self, sql: str, tables=None) -> str:
        return sql

    def validate(self, table: Table) -> None:
        """Files are validated when they are loaded (sqlmpc.local.data)."""

    def run(self, sql: str, keys: set[str], tables=None) -> Iterator[pa.RecordBatch]:
        reader = self.con.sql(sql).to_arrow_reader(BATCH_ROWS)
        produced = False
        for batch in reader:
            produced = True
            yield batch
        if not produced:
            yield pa.RecordBatch.from_pylist([], schema=reader.schema)

    def close(self) -> None:
        self.con.close()


@dataclass
class LocalData:
    """A party's tables by source; runs each local part where its tables live."""

    party: str
    tables: dict[tuple[str, str], Table]
    sources: dict[str, object]
    transfers: list[Transfer] = field(default_factory=list)
    validated: set = field(default_factory=set)

    @classmethod
    def open(cls, federation: Federation, party: str) -> LocalData:
        me = federation.party(party)
        if me is None:
            raise ConfigError(f"party '{party}' is not in the federation")
        sources: dict[str, object] = {"file": FileSource(federation, party)}
        for kind in sorted({t.kind for t in me.tables} - {"file"}):
            connection = me.connection(kind)
            if connection is None:
                raise ConfigError(f"party '{party}' keeps tables in {ENGINE_NAMES[kind]} but has no [{kind}] table "
                                  "saying how to connect: it belongs in the party's own local file "
                                  "(sqlmpc serve --policy FILE)",
                                  path=str(federation.path) if federation.path else None)
            sources[kind] = {"postgresql": PostgresSource, "spark": SparkSource}[kind](party, connection)
        return cls(party, {(party.lower(), t.name.lower()): t for t in me.tables}, sources)

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        return self.sources["file"].con

    def source_of(self, sql: str):
        """The one source holding every table the SQL reads."""
        read = _tables_read(sql)
        kinds = {self.tables[name].kind for name in read if name in self.tables}
        if len(kinds) > 1:
            names = ", ".join(sorted(f"{self.tables[n].qualified_name} ({self.tables[n].kind})" for n in read))
            raise NotSupportedError(f"party '{self.party}' would have to join tables of different sources in one "
                                    f"local part ({names}); keep tables that are joined locally in one source")
        return self.sources[kinds.pop() if kinds else "file"]

    def prepare(self, sql: str) -> str:
        """The local part as its source will run it; raises if the source cannot express it."""
        return self.source_of(sql).prepare(sql, self.tables)

    def run_parts(self, parts) -> dict[tuple[str, int], pa.Table]:
        """Run a plan's local parts at this party, each where its tables live.

        A database table is validated by its engine the first time a query reads it (files:
        when they are loaded); a party re-validates its tables when it is reloaded.
        """
        self.transfers = []
        read = {name for p in parts for name in _tables_read(p.sql)} & set(self.tables)
        for name in sorted(read - self.validated):
            table = self.tables[name]
            if table.kind != "file":
                self.sources[table.kind].validate(table)
            self.validated.add(name)
        return {(p.relation, p.part): self.run(p.sql, {c.name for c in p.columns if c.kind == "key"})
                for p in parts}

    def run(self, sql: str, keys: set[str]) -> pa.Table:
        """Run one local part where its tables live; its result as one Arrow table (and the transfer noted)."""
        source = self.source_of(sql)
        started = time.perf_counter()
        transfer = Transfer(source=source.label)
        batches = []
        for batch in source.run(sql, keys, self.tables):
            transfer.rows += batch.num_rows
            transfer.bytes += batch.nbytes
            transfer.batches += 1
            batches.append(batch)
        transfer.seconds = time.perf_counter() - started
        self.transfers.append(transfer)
        return pa.Table.from_batches(batches)

    def close(self) -> None:
        for source in self.sources.values():
            source.close()


def _tables_read(sql: str) -> set[tuple[str, str]]:
    return {(t.db.lower(), t.name.lower()) for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table)}
