"""Positions in SQL text: character offsets to 1-based line and column, and errors placed there."""

from __future__ import annotations

from sqlglot import exp


def line_col(sql: str, pos: int) -> tuple[int, int]:
    """The 1-based (line, column) of character offset ``pos``."""
    line = sql.count("\n", 0, pos) + 1
    return line, pos - (sql.rfind("\n", 0, pos) + 1) + 1


def error_at(cls, message: str, sql: str, start: int, end: int | None = None, hint: str | None = None):
    """A positioned error of class ``cls`` pointing at ``sql[start:end]``."""
    line, col = line_col(sql, start)
    return cls(message, sql=sql, line=line, column=col, width=max(1, (end or start + 1) - start), hint=hint)


def node_position(node: exp.Expression) -> dict:
    """Keyword arguments that make an error point at ``node`` (if the parser recorded where)."""
    meta = node.meta or {}
    if "line" in meta and "col" in meta:
        width = max(1, meta.get("end", 0) - meta.get("start", 0)) if "end" in meta else 1
        return {"line": meta["line"], "column": meta["col"], "width": width}
    for child in node.iter_expressions():
        found = node_position(child)
        if found:
            return found
    return {}
