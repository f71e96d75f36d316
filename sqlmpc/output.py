"""Rendering results for people (rich tables) and programs (CSV, JSON, Markdown, Parquet, Arrow).

Formats for programs carry the suppression flag as a boolean ``_suppressed``
column: a consumer of the file can tell a withheld cell from a NULL.  A perturbed
result (docs/disclosure.md) also carries ``_perturbed``: per row, the columns whose
values carry cell-key noise (empty for a suppressed row, whose values are withheld).
"""

from __future__ import annotations

import csv
import io
import json
import math

import pyarrow as pa

from sqlmpc.result import Result

SUPPRESSED = "·"   # a cell withheld by disclosure control
WHY_SUPPRESSED = "suppressed: fewer than {k} persons, a dominant contributor, or protecting another cell"
PERTURBED = "~"    # after a column name (tables for people): its values carry cell-key noise
SUPPRESSED_COLUMN = "_suppressed"
PERTURBED_COLUMN = "_perturbed"
PERTURBED_SEPARATOR = ";"      # between column names in the text formats' ``_perturbed``
UNLIMITED_WIDTH = 1_000_000    # a table written to a file or pipe is never wrapped


def with_suppressed(result: Result, perturbed_column: bool = False) -> pa.Table:
    """The result table plus the boolean ``_suppressed`` column (and, when asked and the result is
    perturbed, ``_perturbed``: a list of column names per row)."""
    table = result.table.append_column(SUPPRESSED_COLUMN, pa.array(result.suppressed, pa.bool_()))
    noisy = perturbed_per_row(result)
    if perturbed_column and noisy is not None:
        table = table.append_column(PERTURBED_COLUMN, pa.array(noisy, pa.list_(pa.string())))
    return table


def perturbed_per_row(result: Result) -> list[list[str]] | None:
    """Per row, the columns whose values carry cell-key noise; None when the result is exact."""
    noisy = result.perturbed
    if not noisy:
        return None
    return [[] if s else list(noisy) for s in result.suppressed]


def format_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return repr(float(v))
        return repr(v)
    return str(v)


def to_csv(result: Result, suppressed_column: bool = True) -> str:
    """CSV; with ``suppressed_column`` a column ``_suppressed`` (true/false) per row, and for a perturbed
    result a last column ``_perturbed`` (the row's perturbed columns, separated by ``;``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    noisy = perturbed_per_row(result)
    writer.writerow(result.columns + ([SUPPRESSED_COLUMN] if suppressed_column else [])
                    + ([PERTURBED_COLUMN] if noisy is not None else []))
    for i, (row, s) in enumerate(zip(result.rows(), result.suppressed)):
        writer.writerow([format_value(v) for v in row] + (["true" if s else "false"] if suppressed_column else [])
                        + ([PERTURBED_SEPARATOR.join(noisy[i])] if noisy is not None else []))
    return buf.getvalue()


def to_json(result: Result) -> str:
    """A list of row objects, each with ``_suppressed`` and, for a perturbed result, ``_perturbed`` (a list)."""
    noisy = perturbed_per_row(result)
    rows = [dict(zip(result.columns, row), **{SUPPRESSED_COLUMN: bool(s)},
                 **({PERTURBED_COLUMN: noisy[i]} if noisy is not None else {}))
            for i, (row, s) in enumerate(zip(result.rows(), result.suppressed))]
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
    from rich.table import Table       # lazy: rich costs ~30 ms at start-up; CSV, JSON and files do not need it

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
        text += f", {n_sup} suppressed ({SUPPRESSED} {WHY_SUPPRESSED.format(k=result.min_cell_size)})"
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
        from rich.console import Console   # lazy: as rich_table
        console = Console(file=stream, width=None if _is_tty(stream) else UNLIMITED_WIDTH)
        console.print(rich_table(result))
        console.print(summary(result), style="dim", highlight=False)


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
