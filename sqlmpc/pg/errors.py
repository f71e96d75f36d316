"""sqlmpc errors as PostgreSQL ErrorResponse fields: SQLSTATE, message, caret position, hint."""

from __future__ import annotations

from sqlmpc import errors
from sqlmpc.pg.catalog import CatalogAccessError, CatalogLimitError
from sqlmpc.pg.settings import UnknownSettingError

# Most specific class first: the first match wins.
SQLSTATES: list[tuple[type, str]] = [
    (CatalogAccessError, "42501"),              # insufficient_privilege: not a catalog SELECT
    (CatalogLimitError, "54000"),               # program_limit_exceeded
    (UnknownSettingError, "42704"),             # undefined_object
    (errors.UnsupportedSqlError, "0A000"),      # feature_not_supported
    (errors.SqlSyntaxError, "42601"),           # syntax_error
    (errors.UnknownTableError, "42P01"),        # undefined_table
    (errors.UnknownColumnError, "42703"),       # undefined_column
    (errors.AmbiguousColumnError, "42702"),     # ambiguous_column
    (errors.PolicyError, "42501"),              # insufficient_privilege
    (errors.QueryRefusedError, "42501"),
    (errors.DisclosureError, "42501"),
    (errors.CatalogError, "42704"),             # undefined_object
    (errors.NotSupportedError, "0A000"),
    (errors.DataError, "22000"),                # data_exception
    (errors.OperationalError, "58000"),         # system_error: a party failed
    (errors.InternalError, "XX000"),            # internal_error
    (errors.ProgrammingError, "42000"),         # syntax_error_or_access_rule_violation
    (errors.Error, "XX000"),
]

PROTOCOL_VIOLATION = "08P01"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
FEATURE_NOT_SUPPORTED = "0A000"
PROGRAM_LIMIT_EXCEEDED = "54000"
TOO_MANY_CONNECTIONS = "53300"


def sqlstate(exc: BaseException) -> str:
    for cls, code in SQLSTATES:
        if isinstance(exc, cls):
            return code
    return "XX000"


def position(sql: str, line: int, column: int) -> int:
    """PostgreSQL's error position: the 1-based character index of (line, column) in the query."""
    lines = sql.split("\n")
    return sum(len(text) + 1 for text in lines[:line - 1]) + column


def error_fields(exc: BaseException, sql: str | None = None) -> dict[str, str]:
    """The ErrorResponse fields for an exception raised while running ``sql``."""
    message = str(exc).split("\n")[0] or type(exc).__name__
    fields = {"S": "ERROR", "V": "ERROR", "C": sqlstate(exc), "M": message}
    if isinstance(exc, errors.PositionedError):
        if exc.line is not None and exc.column is not None and sql is not None:
            fields["P"] = str(position(sql, exc.line, exc.column))
        if exc.hint:
            fields["H"] = exc.hint
    return fields


def fatal(code: str, message: str) -> dict[str, str]:
    """The fields of an error that ends the connection (authentication, protocol)."""
    return {"S": "FATAL", "V": "FATAL", "C": code, "M": message}
