"""Statements that describe the federation or a plan: SHOW TABLES, SHOW POLICY, DESCRIBE, EXPLAIN.

They answer from the catalog and the planner alone (no data), as result tables
like any query, so the shell, the driver and pandas show them the same way.
"""

from __future__ import annotations

import pyarrow as pa

from sqlmpc import errors
from sqlmpc.catalog import Federation
from sqlmpc.plan.compile import compile
from sqlmpc.plan.explain import explain
from sqlmpc.result import Result
from sqlmpc.sql.statements import Describe, Explain, ShowPolicy, ShowTables


def _result(columns: dict[str, list]) -> Result:
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    return Result(table, [False] * table.num_rows)


def show_tables(fed: Federation) -> Result:
    tables = fed.tables
    return _result({
        "party": [t.party for t in tables],
        "table": [t.name for t in tables],
        "columns": [", ".join(c.name for c in t.columns) for t in tables],
    })


def show_policy(fed: Federation) -> Result:
    p = fed.policy
    joins = "every pair" if p.joins is None else "; ".join(" - ".join(sorted(j)) for j in sorted(p.joins, key=sorted))
    rows = [
        ("parties", ", ".join(fed.party_names)),
        ("min_cell_size", str(p.min_cell_size)),
        ("joins", joins),
        ("dominance", f"({p.dominance.n}, {p.dominance.percent:g} %)" if p.dominance else "none"),
        ("analysts", ", ".join(sorted(p.analysts)) if p.analysts else "any authenticated analyst"),
        ("insecure_demo", str(fed.insecure_demo).lower()),
        ("catalog fingerprint", fed.fingerprint),
    ]
    return _result({"setting": [r[0] for r in rows], "value": [r[1] for r in rows]})


def describe(fed: Federation, statement: Describe) -> Result:
    table = fed.table(statement.party, statement.table)
    if table is None:
        raise errors.UnknownTableError(f"no table {statement.party}.{statement.table}",
                                       hint="SHOW TABLES lists the federation's tables")

    def detail(c) -> str:
        if c.domain is not None:
            return ", ".join(map(str, c.domain))
        if c.range is not None:
            return f"[{c.range[0]:g}, {c.range[1]:g}]" + (f", {c.scale} decimals" if c.scale else "")
        return c.key_space or ""
    return _result({
        "column": [c.name for c in table.columns],
        "type": [c.type for c in table.columns],
        "role": [c.role.value for c in table.columns],
        "domain or range": [detail(c) for c in table.columns],
    })


def explain_text(fed: Federation, statement: Explain) -> str:
    # The query's tree carries positions in the whole statement's text, so errors point right.
    return explain(compile(statement.query, fed))


def explain_result(text: str) -> Result:
    return _result({"plan": text.splitlines()})


def analyze_text(plan_text: str, result: Result, stats: dict | None) -> str:
    """EXPLAIN ANALYZE: the plan, then what this run opened (the ledger) and how long each stage took."""
    lines = [plan_text, "", "Leakage ledger of this run (every opening):"]
    for e in result.leakage:
        lines.append(f"  - {e['what']}: {e['count']} values — {e['why']}")
    released = sum(not s for s in result.suppressed)
    lines.append(f"Result: {len(result.suppressed)} rows, {released} released, "
                 f"{len(result.suppressed) - released} suppressed")
    for party, reply in (stats or {}).items():
        timings = reply.get("timings") or {}
        if timings:
            lines.append(f"  {party}: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return "\n".join(lines)


def run_metadata(fed: Federation, statement) -> Result | None:
    """The result of a describing statement, or None for a query (which needs the parties)."""
    if isinstance(statement, ShowTables):
        return show_tables(fed)
    if isinstance(statement, ShowPolicy):
        return show_policy(fed)
    if isinstance(statement, Describe):
        return describe(fed, statement)
    if isinstance(statement, Explain) and not statement.analyze:
        return explain_result(explain_text(fed, statement))
    return None
