"""Positions in SQL text: character offsets to 1-based line and column, and errors placed there."""

from __future__ import annotations


def line_col(sql: str, pos: int) -> tuple[int, int]:
    """The 1-based (line, column) of character offset ``pos``."""
    line = sql.count("\n", 0, pos) + 1
    return line, pos - (sql.rfind("\n", 0, pos) + 1) + 1


def error_at(cls, message: str, sql: str, start: int, end: int | None = None, hint: str | None = None):
    """A positioned error of class ``cls`` pointing at ``sql[start:end]``."""
    line, col = line_col(sql, start)
    return cls(message, sql=sql, line=line, column=col, width=max(1, (end or start + 1) - start), hint=hint)
