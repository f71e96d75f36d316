"""Write a federation file (TOML) from catalog values, for generated demo federations.

Table sources are written relative to the federation file, as the loader expects.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlmpc.catalog import Column, Dominance, Party, Role


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _domain(domain: tuple) -> str:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in domain)
    if ints and len(domain) > 2 and list(domain) == list(range(domain[0], domain[-1] + 1)):
        return f"{{ from = {domain[0]}, to = {domain[-1]} }}"
    return _value(domain)


def _column(c: Column) -> str:
    fields = [f"type = {_value(c.type)}", f"role = {_value(c.role.value)}"]
    if c.role is Role.KEY:
        fields.append(f"key_space = {_value(c.key_space)}")
        if c.unique:
            fields.append("unique = true")
    elif c.role is Role.DIMENSION:
        fields.append(f"domain = {_domain(c.domain)}")
    elif c.role is Role.MEASURE:
        fields.append(f"range = {_value(list(c.range))}")
        if c.scale:
            fields.append(f"scale = {c.scale}")
    if c.role is not Role.KEY and not c.nullable:
        fields.append("nullable = false")
    return f"{c.name} = {{ {', '.join(fields)} }}"


def federation_toml(name: str, parties: list[Party], *, min_cell_size: int, comment: str = "",
                    dominance: Dominance | None = None, perturbation: str | None = None,
                    approved_plans: dict[str, str] | None = None) -> str:
    """The TOML text of a federation; each table's ``source`` must already be relative.

    ``approved_plans``: plan hash -> what it is (a comment), released exactly.
    """
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += ["[federation]", f"name = {_value(name)}", "", "[policy]", f"min_cell_size = {min_cell_size}"]
    if perturbation is not None:
        lines.append(f"perturbation = {_value(perturbation)}")
    if approved_plans:
        lines.append("approved_plans = [")
        lines += [f"    {_value(h)},   # {what}" for h, what in approved_plans.items()]
        lines.append("]")
    if dominance is not None:
        lines.append(f"dominance = {{ n = {dominance.n}, percent = {dominance.percent:g} }}"
                     if dominance.kind == "n-largest" else
                     f'dominance = {{ rule = "p-percent", percent = {dominance.percent:g} }}')
    for party in parties:
        lines += ["", f"[parties.{party.name}]", f"address = {_value(party.address)}"]
        for table in party.tables:
            lines += ["", f"[parties.{party.name}.tables.{table.name}]",
                      f"source = {_value(Path(table.source).as_posix())}",
                      "", f"[parties.{party.name}.tables.{table.name}.columns]"]
            lines += [_column(c) for c in table.columns]
    return "\n".join(lines) + "\n"
