"""Rendering results for people (rich tables) and programs (CSV, JSON, Markdown, Parquet, Arrow).

Formats for programs carry the suppression flag as a boolean ``_suppressed``
column: a consumer of the file can tell a withheld cell from a NULL.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pyarrow as pa

from sqlmpc.result import Result

SUPPRESSED = "·"   # a cell withheld by disclosure control
PERTURBED = "~"    # after a column name (tables for people): its values carry cell-key noise
SUPPRESSED_COLUMN = "_suppressed"
UNLIMITED_WIDTH = 1_000_000    # a table written to a file or pipe is never wrapped


def with_suppressed(result: Result) -> pa.Table:
    """The result table plus the boolean ``_suppressed`` column."""
    return result.table.append_column(SUPPRESSED_COLUMN, pa.array(result.suppressed, pa.bool_()))


def format_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return repr(float(v))
        return repr(v)
    return str(v)


def to_csv(result: Result, suppressed_column: bool = True) -> str:
    """CSV; with ``suppressed_column`` a last column ``_suppressed`` (true/false) per row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(result.columns + ([SUPPRESSED_COLUMN] if suppressed_column else []))
    for row, s in zip(result.rows(), result.suppressed):
        writer.writerow([format_value(v) for v in row] + (["true" if s else "false"] if suppressed_column else []))
    return buf.getvalue()


def to_json(result: Result) -> str:
    rows = [dict(zip(result.columns, row), **{SUPPRESSED_COLUMN: bool(s)})
            for row, s in zip(result.rows(), result.suppressed)]
    return json.dumps(rows, default=str, indent=1)


def headers(result: Result) -> list[str]:
    """Column names for people: a perturbed column is marked (see the summary's legend)."""
    noisy = set(result.perturbed)
    return [f"{name} {PERTURBED}" if name in noisy else name for name in result.columns]


def to_markdown(result: Result) -> str:
    lines = ["| " + " | ".join(headers(result)) + " |", "|" + "---|" * len(result.columns)]
    for row, s in zip(result.rows(), result.suppressed):
        lines.append("| " + " | ".join(_cell(v, s) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(v, suppressed: bool) -> str:
    """A cell for people: numbers at full precision (the shortest text that reads back the same)."""
    if v is None and suppressed:
        return SUPPRESSED
    return format_value(v)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def rich_table(result: Result, title: str | None = None):
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for field, name in zip(result.table.schema, headers(result)):
        table.add_column(name, overflow="fold", justify="right" if _numeric(field.type) else "left")
    for row, s in zip(result.rows(), result.suppressed):
        cells = [_cell(v, s) for v in row]
        table.add_row(*cells, style="dim" if s else None)
    return table


def summary(result: Result) -> str:
    """'N rows' and, when there are any, how many cells were suppressed and why."""
    n_sup = sum(result.suppressed)
    n = len(result.suppressed)
    text = f"{n} row{'' if n == 1 else 's'}"
    if n_sup:
        text += f", {n_sup} suppressed ({SUPPRESSED}: fewer than {result.min_cell_size} persons)"
    if result.perturbed:
        text += f"; {PERTURBED} perturbed: counts and sums carry cell-key noise (docs/disclosure.md)"
    return text


def render(result: Result, fmt: str, stream) -> None:
    if fmt == "csv":
        stream.write(to_csv(result))
    elif fmt == "json":
        stream.write(to_json(result) + "\n")
    elif fmt == "markdown":
        stream.write(to_markdown(result))
    else:
        from rich.console import Console
        console = Console(file=stream, width=None if _is_tty(stream) else UNLIMITED_WIDTH)
        console.print(rich_table(result))
        console.print(summary(result), style="dim", highlight=False)


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
