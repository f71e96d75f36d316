"""The statements of the sqlmpc dialect: small typed values around sqlglot trees."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp


@dataclass(frozen=True)
class Query:
    """A SELECT (possibly over a UNION ALL subquery): a sqlglot tree plus its text."""

    tree: exp.Expression
    sql: str = field(compare=False)


@dataclass(frozen=True)
class Explain:
    """``EXPLAIN [ANALYZE] <query>``."""

    query: Query
    analyze: bool = False


@dataclass(frozen=True)
class ShowTables:
    """``SHOW TABLES``."""


@dataclass(frozen=True)
class ShowPolicy:
    """``SHOW POLICY``."""


@dataclass(frozen=True)
class Describe:
    """``DESCRIBE party.table``."""

    party: str
    table: str


Statement = Query | Explain | ShowTables | ShowPolicy | Describe
