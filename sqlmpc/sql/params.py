"""DB-API parameters (qmark style): bound as literals into the parsed tree, never into text."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Sequence

from sqlglot import exp

from sqlmpc import errors


def literal(value) -> exp.Expression:
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float, decimal.Decimal)):
        if isinstance(value, float) and value != value:
            raise errors.ParameterError("NaN cannot be a query parameter")
        return exp.Literal.number(value)
    if isinstance(value, datetime.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:      # no party (or DuckDB) could read it
            raise errors.InvalidTextError(
                f"parameter {value!r} has an invalid character U+{ord(value[err.start]):04X} (a lone surrogate, "
                "not a Unicode character)", hint="pass valid Unicode text") from None
        return exp.Literal.string(value)
    raise errors.ParameterError(f"unsupported parameter type {type(value).__name__}")


def bind_parameters(tree: exp.Expression, parameters: Sequence | None) -> exp.Expression:
    """Replace each ``?`` placeholder, in order, by the literal of its parameter."""
    placeholders = list(tree.find_all(exp.Placeholder, bfs=False))
    params = list(parameters or ())
    if isinstance(parameters, (str, bytes)) or isinstance(parameters, dict):
        raise errors.ParameterError("parameters are a sequence (paramstyle 'qmark')")
    if len(placeholders) != len(params):
        raise errors.ParameterError(
            f"the query has {len(placeholders)} placeholder(s) but {len(params)} parameter(s) were given")
    if not placeholders:
        return tree
    tree = tree.copy()
    # find_all order is stable between a tree and its copy: pre-order, left to right.
    for node, value in zip(sorted(tree.find_all(exp.Placeholder, bfs=False), key=_position), params):
        node.replace(literal(value))
    return tree


def _position(node: exp.Expression) -> tuple[int, int]:
    meta = node.meta or {}
    return meta.get("start", 0), meta.get("col", 0)
