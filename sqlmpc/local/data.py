"""A party's data files as DuckDB views, checked against the catalog.

``register_table`` puts a view ``"party"."table"`` over a Parquet, CSV or
DuckDB file that selects exactly the catalog's columns, in catalog order and
with the catalog's types.  Validation runs a handful of vectorised queries
(one scan for all per-row checks, one GROUP BY for duplicate keys) and turns
the first violation into a ``DataFileError`` naming file, table, column, the
1-based row, the value and how many rows are affected.  Nothing is dropped or
coerced: a file that does not fit the catalog is refused.

All SQL is built as sqlglot expressions; names and paths are quoted by sqlglot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb
from sqlglot import exp

from sqlmpc.catalog import Column, Federation, Role, Table
from sqlmpc.errors import ConfigError, DataFileError

ROW = "__sqlmpc_row"                 # 1-based row number column of the validation scan
CSV_STAGING = "__sqlmpc_csv_rows"    # temp table holding a CSV as read, so rowid = row order

_SMALL_INTS = ("TINYINT", "SMALLINT", "UTINYINT", "USMALLINT")
_INTS = _SMALL_INTS + ("INTEGER", "UINTEGER", "BIGINT")
# File types a catalog type accepts without losing anything (widening only).
# Integers of any width fit an integer column as long as each value does; validation
# checks that value by value (a failed cast is reported, never wrapped or clipped).
COMPATIBLE_TYPES: dict[str, tuple[str, ...]] = {
    "SMALLINT": _INTS,
    "INTEGER": _INTS,
    "BIGINT": _INTS,
    "DOUBLE": _INTS + ("FLOAT", "DOUBLE", "DECIMAL"),
    "VARCHAR": ("VARCHAR",),
    "DATE": ("DATE",),
    "BOOLEAN": ("BOOLEAN",),
}


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _col(name: str) -> exp.Column:
    return exp.column(_ident(name))


def _call(name: str, *args: exp.Expression, **named: exp.Expression) -> exp.Expression:
    params = [exp.PropertyEQ(this=exp.to_identifier(k), expression=v) for k, v in named.items()]
    return exp.Anonymous(this=name, expressions=[*args, *params])


def _run(con: duckdb.DuckDBPyConnection, sql: exp.Expression) -> list[tuple]:
    return con.execute(sql.sql(dialect="duckdb")).fetchall()


@dataclass(frozen=True)
class _FileColumn:
    name: str   # as spelled in the file
    type: str   # DuckDB type as read (all VARCHAR for CSV)


@dataclass(frozen=True)
class _Check:
    """One per-row rule: rows where ``condition`` holds violate it; ``value`` shows the culprit."""

    column: Column
    problem: str
    condition: exp.Expression
    value: exp.Expression

    def messages(self, value: object, count: int) -> tuple[str, str]:
        """The violation for the party's operator, quoting the culprit's value, and without it
        (what may leave the party)."""
        rule = f"{_rows(count, 'violates', 'violate')} this rule"
        what = self.problem if self.problem.startswith("NULL") else f"a value {self.problem}"
        return f"value {_show(value)} {self.problem}; {rule}", f"{what}; {rule}"


class _Source:
    """Where a table's rows come from, as sqlglot relations."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: Table):
        self.con = con
        self.table = table
        self.path = str(table.source)
        if table.format == "duckdb":
            self.alias = "src_" + hashlib.sha256(f"{self.path}\0{table.source_table}".encode()).hexdigest()[:16]
            _copy_duckdb_table(con, table, self.path, self.alias)

    def raw(self, *, row_numbers: bool = False) -> exp.Expression:
        """The file as read: CSV all text (so bad values can be reported rather than failing the read)."""
        path = exp.Literal.string(self.path)
        if self.table.format == "parquet":
            return _call("read_parquet", path, **({"file_row_number": exp.true()} if row_numbers else {}))
        if self.table.format == "csv":
            return _call("read_csv", path, header=exp.true(), all_varchar=exp.true())
        return exp.Table(this=_ident(self.alias), db=_ident(DUCKDB_SOURCES))

    def typed(self, file_names: dict[str, str]) -> exp.Expression:
        """The relation the view reads: CSV with the catalog's types for its columns."""
        if self.table.format != "csv":
            return self.raw()
        types = exp.Struct(expressions=[
            exp.PropertyEQ(this=exp.Literal.string(file_names[c.name.lower()]), expression=exp.Literal.string(c.type))
            for c in self.table.columns])
        return _call("read_csv", exp.Literal.string(self.path), header=exp.true(), types=types)


DUCKDB_SOURCES = "__sqlmpc_duckdb_sources"     # schema of the tables copied out of .duckdb sources


def _copy_duckdb_table(con: duckdb.DuckDBPyConnection, table: Table, path: str, alias: str) -> None:
    """Copy the table out of a .duckdb source, read by a connection of its own that is read-only and
    cut off from every other file *before* anything in the file runs: a view in it that reads a file
    (read_csv('/etc/passwd'), another database) fails instead of reading it into the party's DuckDB,
    whose own external access is still on while it loads its tables (``seal``)."""
    try:
        src = duckdb.connect(path, read_only=True, config={"enable_external_access": False,
                                                           "lock_configuration": True})
    except duckdb.Error as exc:
        raise DataFileError(f"cannot open the DuckDB file: {exc}", path=path, table=table.qualified_name,
                            withheld="cannot open the DuckDB file") from None
    try:
        relation = exp.select(exp.Star()).from_(exp.Table(this=_ident(table.source_table), db=_ident("main")))
        rows = src.sql(relation.sql("duckdb")).to_arrow_table()
    except duckdb.Error as exc:
        raise DataFileError(f"cannot read the data file: {exc}", path=path, table=table.qualified_name,
                            withheld="cannot read the data file") from None
    finally:
        src.close()
    _run(con, exp.Create(kind="SCHEMA", this=exp.Table(db=_ident(DUCKDB_SOURCES)), exists=True))
    name = "__sqlmpc_rows_" + alias
    con.register(name, rows)
    try:
        _run(con, exp.Create(kind="TABLE", this=exp.Table(this=_ident(alias), db=_ident(DUCKDB_SOURCES)),
                             expression=exp.select(exp.Star()).from_(exp.Table(this=_ident(name))), replace=True))
    finally:
        con.unregister(name)


def register_table(con: duckdb.DuckDBPyConnection, table: Table, *, validate: bool = True) -> None:
    """Create the view ``"party"."table"`` over the table's data file (checked first if ``validate``)."""
    if table.kind != "file":
        raise DataFileError(f"the table lives in {table.kind}, not in a file: only its party's node reads it "
                            "(sqlmpc.local.sources)", table=table.qualified_name, source=table.source_table)
    if not table.source.is_file():
        raise DataFileError("data file not found", path=str(table.source), table=table.qualified_name)
    source = _Source(con, table)
    file_columns = _file_columns(con, source)
    file_names = match_columns(table, [(f.name, f.type) for f in file_columns], holder="file",
                               check_types=table.format != "csv", path=str(table.source))
    if validate:
        _validate(con, source, file_names, {f.name: f.type for f in file_columns})
    _run(con, exp.Create(kind="SCHEMA", this=exp.Table(db=_ident(table.party)), exists=True))
    view = exp.select(*(
        exp.cast(_col(file_names[c.name.lower()]), c.type).as_(_ident(c.name)) for c in table.columns
    )).from_(source.typed(file_names))
    _run(con, exp.Create(kind="VIEW", this=exp.Table(this=_ident(table.name), db=_ident(table.party)),
                         expression=view, replace=True))


def _file_columns(con: duckdb.DuckDBPyConnection, source: _Source) -> list[_FileColumn]:
    try:
        rows = _run(con, exp.Describe(this=exp.select(exp.Star()).from_(source.raw())))
    except duckdb.Error as exc:
        raise DataFileError(f"cannot read the data file: {exc}", path=source.path,
                            table=source.table.qualified_name, withheld="cannot read the data file") from None
    return [_FileColumn(name, type_) for name, type_, *_ in rows]


def match_columns(table: Table, stored: list[tuple[str, str]], *, holder: str, check_types: bool = True,
                  **where) -> dict[str, str]:
    """Catalog column (lower-case) -> its name where it is stored (a file, a database's table), from the
    stored (name, DuckDB type) pairs; checks presence and (``check_types``) type.  Extra columns are fine.
    ``where`` locates a mismatch in the DataFileError (``path=`` or ``source=``)."""
    by_name = {name.lower(): (name, type_) for name, type_ in stored}
    names = {}
    for column in table.columns:
        found = by_name.get(column.name.lower())
        if found is None:
            have = ", ".join(name for name, _ in stored)
            raise DataFileError(f"the {holder} has no column '{column.name}' (it has: {have})",
                                table=table.qualified_name, column=column.name, **where)
        name, type_ = found
        if check_types and type_.split("(")[0] not in COMPATIBLE_TYPES[column.type]:
            raise DataFileError(f"the {holder} stores {type_}, which does not fit the catalog's {column.type}",
                                table=table.qualified_name, column=column.name, **where)
        names[column.name.lower()] = name
    return names


# -- validation -----------------------------------------------------------------

def _validate(con: duckdb.DuckDBPyConnection, source: _Source, file_names: dict[str, str],
              file_types: dict[str, str]) -> None:
    table = source.table
    # Columns whose file type differs from the catalog's are converted value by value.
    converted = {c.name for c in table.columns if file_types[file_names[c.name.lower()]] != c.type}
    # A cursor is its own connection: the CSV staging table disappears with it.
    cur = con.cursor()
    try:
        scan = _row_numbered_scan(cur, source, file_names)
        _check_rows(cur, table, scan, converted)
        for column in table.columns:
            if column.role is Role.KEY and (column.unique or column.max_rows):
                _check_rows_per_key(cur, table, scan, column)
    except duckdb.Error as exc:
        raise DataFileError(f"cannot read the data file: {exc}", path=source.path, table=table.qualified_name,
                            withheld="cannot read the data file") from None
    finally:
        cur.close()


def _row_numbered_scan(cur: duckdb.DuckDBPyConnection, source: _Source,
                       file_names: dict[str, str]) -> exp.Select:
    """SELECT <1-based row>, <catalog columns as in the file> FROM the source."""
    table = source.table
    columns = [_col(file_names[c.name.lower()]).as_(_ident(c.name)) for c in table.columns]
    if table.format == "parquet":
        row = exp.Add(this=_col("file_row_number"), expression=exp.Literal.number(1))
        return exp.select(row.as_(_ident(ROW)), *columns).from_(source.raw(row_numbers=True))
    if table.format == "csv":
        # Insertion order is kept, so rowid is the row number as read (header excluded).
        _run(cur, exp.Create(kind="TABLE", this=exp.Table(this=_ident(CSV_STAGING)),
                             properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
                             expression=exp.select(exp.Star()).from_(source.raw()), replace=True))
        relation: exp.Expression = exp.Table(this=_ident(CSV_STAGING))
    else:
        relation = source.raw()
    row = exp.Add(this=exp.column("rowid"), expression=exp.Literal.number(1))
    return exp.select(row.as_(_ident(ROW)), *columns).from_(relation)


def _checks(table: Table, converted: set[str]) -> list[_Check]:
    checks = []
    for column in table.columns:
        raw = _col(column.name)
        typed = exp.TryCast(this=raw.copy(), to=exp.DataType.build(column.type)) if column.name in converted else raw
        shown = exp.Coalesce(this=exp.cast(raw.copy(), "VARCHAR"), expressions=[exp.Literal.string("NULL")])
        if column.name in converted:
            checks.append(_Check(column, f"is not a valid {column.type}",
                                 exp.and_(exp.Not(this=exp.Is(this=raw.copy(), expression=exp.Null())),
                                          exp.Is(this=typed.copy(), expression=exp.Null())), shown))
        if not column.nullable:
            what = "key" if column.role is Role.KEY else "value"
            checks.append(_Check(column, f"NULL {what} in a column that does not allow NULL",
                                 exp.Is(this=raw.copy(), expression=exp.Null()), shown))
        if column.role is Role.DIMENSION and column.domain is not None:
            domain = [exp.convert(v) for v in column.domain]
            preview = ", ".join(map(str, column.domain[:12])) + (", ..." if len(column.domain) > 12 else "")
            checks.append(_Check(column, f"is outside the declared domain ({preview})",
                                 exp.Not(this=exp.In(this=typed.copy(), expressions=domain)), shown))
        if column.role is Role.MEASURE and column.range is not None:
            lo, hi = (exp.convert(v) for v in column.range)
            outside = exp.or_(exp.LT(this=typed.copy(), expression=lo), exp.GT(this=typed.copy(), expression=hi))
            if column.type == "DOUBLE":   # NaN is no number in any range
                outside = exp.or_(outside, exp.Anonymous(this="isnan", expressions=[typed.copy()]))
            checks.append(_Check(column, f"is outside the declared range [{column.range[0]}, {column.range[1]}]",
                                 outside, shown))
    return checks


def _check_rows(cur: duckdb.DuckDBPyConnection, table: Table, scan: exp.Select, converted: set[str]) -> None:
    """All per-row rules in one scan: per rule, the count of violating rows, the first row and its value."""
    checks = _checks(table, converted)
    if not checks:
        return
    items = []
    for check in checks:
        where = exp.Where(this=check.condition)
        items += [exp.Filter(this=exp.Count(this=exp.Star()), expression=where.copy()),
                  exp.Filter(this=exp.Min(this=_col(ROW)), expression=where.copy()),
                  exp.Filter(this=exp.Anonymous(this="arg_min", expressions=[check.value, _col(ROW)]),
                             expression=where.copy())]
    result = _run(cur, exp.select(*items).from_(scan.subquery("scan")))[0]
    for i, check in enumerate(checks):
        count, row, value = result[3 * i: 3 * i + 3]
        if count:
            message, withheld = check.messages(value, count)
            raise DataFileError(message, path=str(table.source), table=table.qualified_name,
                                column=check.column.name, row=row, withheld=withheld)


def _check_rows_per_key(cur: duckdb.DuckDBPyConnection, table: Table, scan: exp.Select, column: Column) -> None:
    """A key declared unique, or with max_rows, has no more rows per value (the fields are sized for it)."""
    key = _col(column.name)
    limit = column.rows_per_key
    per_key = (exp.select(exp.Count(this=exp.Star()).as_("n")).from_(scan.subquery("scan"))
               .where(exp.Not(this=exp.Is(this=key.copy(), expression=exp.Null())))
               .group_by(key.copy()).having(exp.GT(this=exp.Count(this=exp.Star()),
                                                   expression=exp.Literal.number(limit))))
    excess = exp.select(exp.Sum(this=exp.Sub(this=exp.column("n"), expression=exp.Literal.number(limit)))).from_(
        per_key.subquery("per_key"))
    extra = _run(cur, excess)[0][0]
    if not extra:
        return
    # Only on failure: find the first row past the limit of its key (a window, so slower, but rare).
    nth = exp.Window(this=exp.RowNumber(), partition_by=[key.copy()], order=exp.Order(expressions=[
        exp.Ordered(this=_col(ROW))]))
    numbered = exp.select(_col(ROW), exp.cast(key.copy(), "VARCHAR").as_("k"), nth.as_("nth")).from_(
        scan.subquery("scan"))
    first = (exp.select(_col(ROW), exp.column("k")).from_(numbered.subquery("numbered"))
             .where(exp.EQ(this=exp.column("nth"), expression=exp.Literal.number(limit + 1)))
             .order_by(_col(ROW)).limit(1))
    row, value = _run(cur, first)[0]
    message, withheld = too_many_rows(value, int(extra), column)
    raise DataFileError(message, path=str(table.source), table=table.qualified_name, column=column.name, row=row,
                        withheld=withheld)


def too_many_rows(value: object, extra: int, column: Column) -> tuple[str, str]:
    """The messages for a key with more rows than its column declares (files and databases alike):
    for the party's operator, naming the key, and without it (what leaves the party)."""
    if column.unique:
        rule = f"{_rows(extra, 'repeats', 'repeat')} an earlier key"
        return f"duplicate key {_show(value)} in a column declared unique; {rule}", f"duplicate keys; {rule}"
    rule = (f"more rows than the column's max_rows = {column.max_rows:,}; {_rows(extra, 'is', 'are')} over the "
            "limit (raise max_rows in the federation file, or fix the data)")
    return f"key {_show(value)} has {rule}", f"a key has {rule}"


def _show(value: object) -> str:
    return "NULL" if value in (None, "NULL") else repr(value)


def _rows(count: int, singular_verb: str, plural_verb: str) -> str:
    return f"1 row {singular_verb}" if count == 1 else f"{count:,} rows {plural_verb}"


# -- whole databases ---------------------------------------------------------------

def quiet_duckdb() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that draws no progress bar: from a party process the bar of a long local
    query would cut through the analyst's shell (the embedded parties share its terminal)."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con


def open_party_database(federation: Federation, party_name: str, *, validate: bool = True
                        ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with only this party's tables as views (a party sees only its own files)."""
    party = federation.party(party_name)
    if party is None:
        raise ConfigError(f"unknown party '{party_name}' (parties: {', '.join(federation.party_names)})",
                          path=str(federation.path) if federation.path else None)
    con = quiet_duckdb()
    for table in party.tables:
        register_table(con, table, validate=validate)
    return con


def open_union_database(federation: Federation, *, validate: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with every party's tables: the plaintext oracle's view of the world."""
    con = quiet_duckdb()
    for table in federation.tables:
        register_table(con, table, validate=validate)
    return con


def seal(con: duckdb.DuckDBPyConnection, tables) -> None:
    """Load the given tables into memory and cut the database off from every file.

    A party node seals its database after loading its own tables: its local
    SQL can then read nothing but those tables, not another party's files.
    """
    for table in tables:
        view = exp.Table(this=_ident(table.name), db=_ident(table.party)).sql("duckdb")
        loaded = exp.Table(this=_ident(f"{table.name}__loaded"), db=_ident(table.party)).sql("duckdb")
        con.execute(f"CREATE TABLE {loaded} AS SELECT * FROM {view}")
        con.execute(f"DROP VIEW {view}")
        con.execute(f"ALTER TABLE {loaded} RENAME TO {_ident(table.name).sql('duckdb')}")
    con.execute(f"DROP SCHEMA IF EXISTS {_ident(DUCKDB_SOURCES).sql('duckdb')} CASCADE")   # copied above
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
