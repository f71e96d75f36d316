"""``sqlmpc run --report out.html``: one self-contained HTML page, a table and a bar chart per query.

No scripts, fonts or images are fetched: styles are inline and charts are SVG.
Suppressed cells show as ``·`` on a hatched background in the table and as a
hatched stub labelled "suppressed" in the chart.
"""

from __future__ import annotations

import datetime
import html

import pyarrow as pa

from sqlmpc import errors
from sqlmpc.output import SUPPRESSED, WHY_SUPPRESSED, format_value
from sqlmpc.result import has_aggregate
from sqlmpc.sql.parser import parse_query

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 8px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.suppressed{background:repeating-linear-gradient(45deg,#eee,#eee 4px,#ddd 4px,#ddd 8px);color:#888;text-align:center}
.ok{color:#080}.fail{color:#b00}
pre{background:#f6f6f6;padding:.5em;overflow:auto}
.legend{font-size:90%;color:#555}
"""

HATCH = ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
         'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eee"/>'
         '<line x1="0" y1="0" x2="0" y2="6" stroke="#aaa" stroke-width="3"/></pattern></defs>')


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def table_html(result) -> str:
    numeric = [_numeric(f.type) for f in result.table.schema]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in result.columns)
    rows = []
    for row, suppressed in zip(result.rows(), result.suppressed):
        cells = []
        for v, num in zip(row, numeric):
            if v is None and suppressed:
                cells.append(f'<td class="suppressed" title="{WHY_SUPPRESSED.format(k="k")}">{SUPPRESSED}</td>')
            else:
                cells.append(f'<td class="{"num" if num else "txt"}">{html.escape(format_value(v))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def aggregated_columns(sql: str, n_columns: int) -> list[bool] | None:
    """Which result columns hold an aggregate (the others are dimensions, even numeric ones like a year)."""
    try:
        items = parse_query(sql).expressions
    except errors.Error:
        return None
    return [has_aggregate(e) for e in items] if len(items) == n_columns else None


def chart_svg(result, aggregated: list[bool] | None = None) -> str:
    """A horizontal bar chart of the first numeric aggregate column, bars labelled by the dimensions."""
    schema = result.table.schema
    aggregated = aggregated or [_numeric(f.type) for f in schema]      # unknown: numbers are the values
    values = next((i for i, f in enumerate(schema) if _numeric(f.type) and aggregated[i]), None)
    if values is None or not result.rows():
        return ""
    labels = [i for i, f in enumerate(schema) if not aggregated[i]]
    rows = result.rows()
    numbers = [r[values] for r in rows]
    top = max((abs(float(v)) for v in numbers if v is not None), default=0.0) or 1.0
    bar_h, label_w, width = 18, 220, 420
    parts = [HATCH]
    for i, (row, suppressed) in enumerate(zip(rows, result.suppressed)):
        y = i * (bar_h + 4)
        label = " · ".join(format_value(row[j]) for j in labels) or str(i + 1)
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="12">'
                     f"{html.escape(label)}</text>")
        v = row[values]
        if v is None:
            note = "suppressed" if suppressed else "NULL"
            fill = 'url(#hatch)' if suppressed else "#fff"
            parts.append(f'<rect class="{note}" x="{label_w}" y="{y}" width="60" height="{bar_h}" fill="{fill}" '
                         f'stroke="#aaa"/><text x="{label_w + 66}" y="{y + 13}" font-size="12" fill="#888">'
                         f"{note}</text>")
            continue
        w = max(1.0, abs(float(v)) / top * width)
        parts.append(f'<rect class="value" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#4a78b5"/>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 13}" font-size="12">{html.escape(format_value(v))}'
                     f"</text>")
    height = len(rows) * (bar_h + 4)
    title = html.escape(schema.field(values).name)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{title}" '
            f'width="{label_w + width + 120}" height="{height}">{"".join(parts)}</svg>')


def html_report(outcomes, title: str = "sqlmpc saved queries") -> str:
    """The page for ``outcomes`` (each with .path, .seconds, .failure, .details, .result)."""
    sections = []
    for o in outcomes:
        sql = o.path.read_text()
        status = ('<span class="ok">ok</span>' if o.failure is None
                  else f'<span class="fail">FAIL: {html.escape(o.failure)}</span>')
        body = [f'<h2 id="{html.escape(o.path.stem)}">{html.escape(o.path.stem)}</h2>',
                f"<p>{status} · {o.seconds:.2f} s · <code>{html.escape(str(o.path))}</code></p>",
                f"<details><summary>SQL</summary><pre>{html.escape(sql)}</pre></details>"]
        if o.result is not None:
            n_sup = sum(o.result.suppressed)
            body.append(f'<p class="legend">{len(o.result.suppressed)} rows, {n_sup} suppressed '
                        f"({SUPPRESSED}: fewer than {o.result.min_cell_size} persons)</p>")
            body.append(chart_svg(o.result, aggregated_columns(sql, len(o.result.columns))))
            body.append(table_html(o.result))
        if o.failure is not None and o.details:
            body.append(f"<pre>{html.escape(o.details)}</pre>")
        sections.append("<section>" + "\n".join(body) + "</section>")
    passed = sum(o.failure is None for o in outcomes)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{passed} of {len(outcomes)} ok · {stamp}</p>" + "\n".join(sections) + "</body></html>\n")
