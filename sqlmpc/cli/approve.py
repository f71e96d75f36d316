"""``sqlmpc approve FILE.sql...``: the lines that release saved queries exactly.

A federation with ``perturbation = "cell_key"`` perturbs every released count and sum
(docs/disclosure.md) except the plans it lists in ``approved_plans``: the hash of a query's
*exact* plan, which covers the query's canonical text and the federation file (but not its
list of approvals).  Every party checks a proposed query against its own copy of the list;
all release rules still apply to an approved plan.
"""

from __future__ import annotations

from pathlib import Path

from sqlmpc.catalog import Federation
from sqlmpc.plan.compile import bind_query
from sqlmpc.plan.planner import exact_digest
from sqlmpc.sql.script import statements


def approvals(file: str | Path, federation: Federation) -> dict[str, str]:
    """Exact plan hash -> a label (file and statement number) for every statement of a .sql file."""
    file = Path(file)
    found = statements(file.read_text(encoding="utf-8"))
    out = {}
    for i, sql in enumerate(found, 1):
        label = file.name if len(found) == 1 else f"{file.name} #{i}"
        out[exact_digest(bind_query(sql, federation))] = label
    return out


def approve_lines(files: list[str], federation: Federation) -> str:
    """The ``approved_plans`` entry to put under [policy] (the ones already there kept)."""
    hashes = {h: "already approved" for h in sorted(federation.policy.approved_plans)}
    for file in files:
        hashes.update(approvals(file, federation))
    body = "\n".join(f'    "{h}",   # {label}' for h, label in hashes.items())
    return f"approved_plans = [\n{body}\n]"
