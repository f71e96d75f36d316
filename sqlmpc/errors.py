"""The exception hierarchy of sqlmpc (PEP 249, plus specific subclasses).

Every error a user can cause has its own class and a message a person can act
on.  SQL errors carry the position of the offending token and render a caret
line under it, like PostgreSQL and DuckDB do.
"""

from __future__ import annotations


class Warning(Exception):  # noqa: A001 - the name is fixed by PEP 249
    """Important warnings, e.g. data truncation."""


class Error(Exception):
    """Base class of all sqlmpc errors (PEP 249)."""


class InterfaceError(Error):
    """Misuse of the driver interface itself (e.g. a closed cursor)."""


class DatabaseError(Error):
    """Errors related to the federation's data or its processing."""


class DataError(DatabaseError):
    """Data that does not fit the catalog: wrong type, out of range, NULL key."""


class OperationalError(DatabaseError):
    """The federation could not run the query: a party is down, a timeout."""


class IntegrityError(DatabaseError):
    """Relational integrity is affected (unused: sqlmpc is read-only)."""


class InternalError(DatabaseError):
    """sqlmpc reached a state it should not; please report it."""


class ProgrammingError(DatabaseError):
    """The query is wrong or not allowed: syntax, unknown names, policy."""


class NotSupportedError(DatabaseError):
    """A feature that sqlmpc does not offer (e.g. rollback)."""


# --------------------------------------------------------------------------
# Positioned SQL errors


EXCERPT_WIDTH = 100   # characters of a long line shown around the caret


def caret_excerpt(sql: str, line: int, column: int, width: int = 1) -> str:
    """The offending source line with a caret under (line, column), 1-based."""
    lines = sql.split("\n")           # as positions count lines: only \n ends one
    if not 1 <= line <= len(lines):
        return ""
    text = lines[line - 1]
    prefix = f"LINE {line}: "
    # Tabs would misalign the caret; render them as single spaces.  A lone surrogate
    # could not be printed at all: show it as the replacement character.
    text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text.replace("\t", " "))
    if len(text) > EXCERPT_WIDTH:           # a very long line: the part around the caret
        first = max(0, min(column - 1 - EXCERPT_WIDTH // 2, len(text) - EXCERPT_WIDTH))
        text = ("..." if first else "") + text[first:first + EXCERPT_WIDTH] + \
            ("..." if first + EXCERPT_WIDTH < len(text) else "")
        column -= first - (3 if first else 0)
        width = min(width, EXCERPT_WIDTH)
    return f"{prefix}{text}\n{' ' * (len(prefix) + column - 1)}{'^' * max(1, width)}"


class PositionedError(ProgrammingError):
    """A ProgrammingError that points at a place in the SQL text."""

    def __init__(self, message: str, *, sql: str | None = None, line: int | None = None,
                 column: int | None = None, width: int = 1, hint: str | None = None):
        self.message = message
        self.sql = sql
        self.line = line
        self.column = column
        self.width = width
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.message]
        if self.line is not None and self.column is not None:
            parts[0] += f" (line {self.line}, column {self.column})"
            if self.sql is not None:
                excerpt = caret_excerpt(self.sql, self.line, self.column, self.width)
                if excerpt:
                    parts.append(excerpt)
        if self.hint:
            parts.append(f"HINT: {self.hint}")
        return "\n".join(parts)


class SqlSyntaxError(PositionedError):
    """The text is not valid SQL of the sqlmpc dialect."""


class UnsupportedSqlError(SqlSyntaxError):
    """Valid SQL elsewhere, but outside the sqlmpc dialect (DDL, DML, windows, ...)."""


class UnsupportedExpressionError(PositionedError):
    """An expression the dialect accepts that the secure engine cannot compute (e.g. a function of several
    parties' columns, or a value without numeric bounds): refused when the query is planned."""


class InvalidTextError(SqlSyntaxError):
    """The statement is not valid Unicode text (e.g. a lone surrogate character)."""


class LimitExceededError(PositionedError):
    """The statement exceeds a documented limit: length, nesting depth, IN list or select list."""


class SqlTypeError(PositionedError):
    """An operator or function applied to values of the wrong type (e.g. SUM of text, YEAR of a number)."""


class EmptyGridError(PositionedError):
    """The WHERE clause leaves a GROUP BY expression no value of its public domain."""


class CatalogError(PositionedError):
    """A name in the query does not resolve: unknown party, table or column, or ambiguity."""


class UnknownTableError(CatalogError):
    """The query names a table that no party of the federation declares."""


class UnknownColumnError(CatalogError):
    """The query names a column that none of its tables has."""


class AmbiguousColumnError(CatalogError):
    """An unqualified column name exists in more than one table of the query."""


class PolicyError(PositionedError):
    """The query is valid SQL but the federation's policy forbids it.

    ``rule`` names the rule (e.g. ``"key-only-in-join"``), ``column_name`` the
    column at fault when there is one, ``party`` the party whose policy refused.
    (``line`` and ``column`` are the position in the SQL text, as for every
    positioned error.)
    """

    rule: str = "policy"

    def __init__(self, message: str, *, column_name: str | None = None, party: str | None = None,
                 **kwargs):
        self.column_name = column_name
        self.party = party
        super().__init__(message, **kwargs)

    def _render(self) -> str:
        text = super()._render()
        head, _, rest = text.partition("\n")
        prefix = f"policy violation [{self.rule}]"
        if self.party:
            prefix += f" at party '{self.party}'"
        return f"{prefix}: {head}" + (f"\n{rest}" if rest else "")


class KeyColumnPolicyError(PolicyError):
    """A key column used anywhere but a join equality or COUNT(DISTINCT key)."""

    rule = "key-only-in-join"


class MeasurePolicyError(PolicyError):
    """A measure used outside an aggregate (or outside WHERE)."""

    rule = "measure-only-in-aggregate"


class AttributePolicyError(PolicyError):
    """An attribute used anywhere but a filter at its owner."""

    rule = "attribute-only-in-local-filter"


class GroupByPolicyError(PolicyError):
    """GROUP BY on something without a public domain, or spanning parties."""

    rule = "group-by-on-dimensions"


class PersonLevelOutputError(PolicyError):
    """An output column that is neither a dimension nor an aggregate."""

    rule = "no-person-level-output"


class JoinPolicyError(PolicyError):
    """A join the federation does not allow (wrong columns or parties)."""

    rule = "join"


class AccessPolicyError(PolicyError):
    """The analyst or party may not ask this query."""

    rule = "access"


class OrderStatisticPolicyError(PolicyError):
    """MIN/MAX (an order statistic) of a measure: it is one person's exact value."""

    rule = "no-order-statistics-of-measures"


class AggregateArgumentPolicyError(PolicyError):
    """An aggregate argument whose contributors sqlmpc cannot count (a non-linear function of columns)."""

    rule = "countable-aggregate-arguments"


class ParameterError(ProgrammingError):
    """The query's parameters do not fit it: their number, or a value that cannot be a literal."""


class DisclosureError(ProgrammingError):
    """The result cannot be released under disclosure control."""


# --------------------------------------------------------------------------
# Configuration and data


class ConfigError(InterfaceError):
    """The federation file (TOML) is broken; the message names file and location."""

    def __init__(self, message: str, *, path: str | None = None, location: str | None = None,
                 line: int | None = None):
        self.path = path
        self.location = location
        self.line = line
        where = ":".join(str(p) for p in (path, line) if p is not None)
        if location:
            where = f"{where} [{location}]" if where else f"[{location}]"
        super().__init__(f"{where}: {message}" if where else message)


class EvaluationError(DataError):
    """An expression of the query failed on the data itself (an overflow, a failed conversion)."""


class DataFileError(DataError):
    """A party's data file does not match its catalog entry.

    The message quotes the offending value or key for the party's operator; ``withheld`` is the
    same message without it, which is all that leaves the party (:func:`shareable`): one value
    or one person's key is data of fewer than k persons.
    """

    def __init__(self, message: str, *, path: str | None = None, table: str | None = None,
                 column: str | None = None, row: int | None = None, source: str | None = None,
                 withheld: str | None = None):
        self.path = path
        self.source = source            # a database table (sqlmpc.local.sources) instead of a file
        self.table = table
        self.column = column
        self.row = row
        where = []
        if table:
            where.append(f"table {table}")
        if column:
            where.append(f"column {column}")
        # What may leave the party names the table and column, not the row, file or value.
        named = ", ".join(where) + "; " if where else ""
        self.withheld = None if withheld is None else f"{withheld} ({named}the party's own log has the value)"
        if row is not None:
            where.append(f"row {row}")
        if path:
            where.append(f"file {path}")
        if source:
            where.append(f"source {source}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


WITHHELD = "the party's own log has its message"


def shareable(exc: BaseException) -> str:
    """An error's message as it may leave its party, to peers, coordinator and analyst.

    sqlmpc's own messages carry no data, except those that quote a value or an engine's text:
    they set ``withheld``, the message without it.  Any other exception (DuckDB, PostgreSQL,
    Spark, numpy, MPyC) is named by its class and the party's stage only, never by its text:
    an engine quotes the row it failed on.
    """
    withheld = getattr(exc, "withheld", None)
    if withheld:
        return withheld
    if isinstance(exc, Error):
        return str(exc)
    stage = getattr(exc, "stage", None)
    return f"{type(exc).__name__}{f' in stage {stage!r}' if stage else ''} ({WITHHELD})"


class PartyError(OperationalError):
    """A party failed, refused, or could not be reached; ``party`` names it.

    ``withheld``: the message as it may leave the party, where ``message`` quotes an engine's
    text (:func:`shareable`)."""

    def __init__(self, message: str, *, party: str | None = None, withheld: str | None = None):
        self.party = party
        self.withheld = None if withheld is None else f"party '{party}': {withheld}" if party else withheld
        super().__init__(f"party '{party}': {message}" if party else message)


class PeerLostError(PartyError):
    """A party lost its MPC connection to a peer mid-query: the consequence of a failure elsewhere,
    which the coordinator reports instead when it hears of it in time."""


class PeerSilentError(PartyError):
    """No MPC message for the timeout while a party waited on several peers (or on none): the peer
    named, the one silent longest, is a guess, which the coordinator reports only if no party that
    waited on one peer alone names it in time."""


class SourceError(PartyError):
    """A party's database (PostgreSQL, Spark) failed: unreachable, refused the login, no such
    table, or an SQL error inside it.  Names the party and the source, never a password."""

    def __init__(self, message: str, *, party: str | None = None, source: str | None = None,
                 withheld: str | None = None):
        self.source = source
        where = f"source {source}: " if source else ""
        super().__init__(where + message, party=party, withheld=None if withheld is None else where + withheld)


class OutOfMemoryError(PartyError):
    """A party ran out of memory during a query; the query fails on every party, the next one runs."""


class QueryRefusedError(ProgrammingError):
    """A party refused the query during admission; carries its reason."""

    def __init__(self, message: str, *, party: str | None = None):
        self.party = party
        super().__init__(f"party '{party}' refused the query: {message}" if party else message)
