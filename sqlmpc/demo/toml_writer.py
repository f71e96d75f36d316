"""A federation file (TOML) from catalog values, for generated demo federations.

The document is built as plain dicts and lists in the loader's layout and
serialised by tomli-w; TOML has no place for comments in such a document, so the
header comment (and what each approved plan is) is written above it.  Table
sources are written relative to the federation file, as the loader expects.
"""

from __future__ import annotations

from pathlib import Path

import tomli_w

from sqlmpc.catalog import Column, Dominance, Party, Role


def _number(v: float) -> int | float:
    """30.0 as 30, as a person would write it (the loader reads either)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _domain(domain: tuple) -> list | dict:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in domain)
    if ints and len(domain) > 2 and list(domain) == list(range(domain[0], domain[-1] + 1)):
        return {"from": domain[0], "to": domain[-1]}
    return list(domain)


def _column(c: Column) -> dict:
    out: dict = {"type": c.type, "role": c.role.value}
    if c.role is Role.KEY:
        out["key_space"] = c.key_space
        if c.unique:
            out["unique"] = True
        if c.max_rows is not None:
            out["max_rows"] = c.max_rows
    elif c.role is Role.DIMENSION:
        out["domain"] = _domain(c.domain)
    elif c.role is Role.MEASURE:
        out["range"] = list(c.range)
        if c.scale:
            out["scale"] = c.scale
    if c.role is not Role.KEY and not c.nullable:
        out["nullable"] = False
    return out


def _dominance(d: Dominance) -> dict:
    if d.kind == "n-largest":
        return {"n": d.n, "percent": _number(d.percent)}
    return {"rule": "p-percent", "percent": _number(d.percent)}


def federation_toml(name: str, parties: list[Party], *, min_cell_size: int, comment: str = "",
                    dominance: Dominance | None = None, perturbation: str | None = None,
                    approved_plans: dict[str, str] | None = None) -> str:
    """The TOML text of a federation; each table's ``source`` must already be relative.

    ``approved_plans``: plan hash -> what it is (listed in the header comment), released exactly.
    """
    policy: dict = {"min_cell_size": min_cell_size}
    if perturbation is not None:
        policy["perturbation"] = perturbation
    if approved_plans:
        policy["approved_plans"] = list(approved_plans)
    if dominance is not None:
        policy["dominance"] = _dominance(dominance)
    document = {
        "federation": {"name": name},
        "policy": policy,
        "parties": {party.name: {"address": party.address, "tables": {
            table.name: {"source": Path(table.source).as_posix(),
                         "columns": {c.name: _column(c) for c in table.columns}}
            for table in party.tables}} for party in parties},
    }
    header = comment.splitlines()
    if approved_plans:
        header += ["approved_plans (released exactly):"] + [f"  {h}  {what}" for h, what in approved_plans.items()]
    return "".join(f"# {line}\n" for line in header) + tomli_w.dumps(document)
