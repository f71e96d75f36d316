"""Rendering results for people (rich tables) and programs (CSV, JSON, Markdown)."""

from __future__ import annotations

import csv
import io
import json
import math

from sqlmpc.result import Result

SUPPRESSED = "·"   # a cell withheld by disclosure control


def format_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return repr(float(v))
        return repr(v)
    return str(v)


def to_csv(result: Result) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows():
        writer.writerow([format_value(v) for v in row])
    return buf.getvalue()


def to_json(result: Result) -> str:
    rows = [dict(zip(result.columns, row), **({"_suppressed": True} if s else {}))
            for row, s in zip(result.rows(), result.suppressed)]
    return json.dumps(rows, default=str, indent=1)


def to_markdown(result: Result) -> str:
    lines = ["| " + " | ".join(result.columns) + " |", "|" + "---|" * len(result.columns)]
    for row, s in zip(result.rows(), result.suppressed):
        lines.append("| " + " | ".join(_cell(v, s) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(v, suppressed: bool) -> str:
    if v is None and suppressed:
        return SUPPRESSED
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.2f}"
    return "" if v is None else str(v)


def rich_table(result: Result, title: str | None = None):
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name in result.columns:
        table.add_column(name, overflow="fold")
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
        console = Console(file=stream)
        console.print(rich_table(result))
        console.print(summary(result), style="dim", highlight=False)
