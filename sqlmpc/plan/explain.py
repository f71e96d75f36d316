"""EXPLAIN: the plan as text for people (its hashed text is :meth:`Plan.canonical`)."""

from __future__ import annotations

from sqlmpc.plan.plan import KEYED, Plan


def explain(plan: Plan) -> str:
    release = "perturbed" if plan.perturbation is not None else "exact"
    out = [f"Plan {plan.digest[:16]}  (mode: {plan.mode}, k = {plan.min_cell_size}, release: {release})", ""]
    out.append("Local part (each party alone, in its own DuckDB):")
    for p in plan.parts:
        cols = ", ".join(f"{c.name}:{c.kind}" + (f"/10^{c.scale}" if c.scale else "") for c in p.columns)
        out.append(f"  -- {p.party}  [{p.relation}{'' if p.part == 0 else f' part {p.part}'}]  -> {cols}")
        out.extend("     " + line for line in p.sql.splitlines())
    out.append("")
    out.append("Secure part (MPC between the parties):")
    step = 1
    if plan.mode == "local" and plan.perturbation is not None:
        keyed = sum(m.kind in KEYED for m in plan.moments)
        out.append(f"  {step}. secret-share each party's per-cell totals ({plan.grid.size} cells × "
                   f"{len(plan.moments) - keyed} moments) and add them up; for the cell keys, its rows (one per "
                   f"person and cell: key hash, {keyed} × {plan.grid.size} weights), their record keys and "
                   "Σ record key × weight per cell")
    elif plan.mode == "local":
        out.append(f"  {step}. secret-share each party's per-cell totals ({plan.grid.size} cells × "
                   f"{len(plan.moments)} moments) and add them up")
    else:
        rels = ", ".join(plan.relations)
        rows = "per-key totals" if plan.per_key else "rows"
        out.append(f"  {step}. secret-share each party's {rows} ({rels}); shuffle each by resharing")
        step += 1
        out.append(f"  {step}. join on keyed PRF tokens of the shuffled keys: "
                   + "; ".join(f"{j.kind.upper()} JOIN {j.relation}" for j in plan.joins))
        if plan.row_filter is not None:
            step += 1
            out.append(f"  {step}. oblivious filter flag per joined row: {plan.row_filter.sql()}")
        step += 1
        out.append(f"  {step}. cell indicators: one-hot codes of {', '.join(plan.cell_relations) or '(one cell)'} "
                   f"-> {plan.grid.size} cells")
    step += 1
    out.append(f"  {step}. moments per cell:")
    for m in plan.moments:
        out.append(f"       {m.name} = {m.kind.upper()}({m.expr.sql()})")
    step += 1
    out.append(f"  {step}. release rules per cell (secure comparisons; one flag per cell opened):")
    for g in plan.guards:
        if g.kind == "contributors":
            out.append(f"       {g.moments[0]} >= {plan.min_cell_size}")
        elif g.kind == "extreme":
            out.append(f"       MIN/MAX: the first value from the extreme end that >= {plan.min_cell_size} persons "
                       f"hold ({', '.join(g.moments)})")
        else:
            out.append(f"       dominance: {g.constant} · {g.moments[1]} <= {g.moments[0]}²")
    out.append("       then secondary suppression over the grid and its margins")
    if plan.having is not None:
        step += 1
        out.append(f"  {step}. HAVING {plan.having.sql()} on released cells")
    if plan.perturbation is not None:
        step += 1
        p = plan.perturbation.policy
        out.append(f"  {step}. cell-key perturbation of released cells (docs/disclosure.md): counts ±{p.max_deviation} "
                   f"(variance {p.variance:g}), sums ±{p.magnitude_deviation:g}·m, m ≥ the largest contribution:")
        for t in plan.perturbation.targets:
            out.append(f"       {t.moment}: {t.kind}, cell key Σ {' + '.join(t.keys)} mod 2^16")
    step += 1
    out.append(f"  {step}. reveal per released cell:")
    for i, o in enumerate(plan.outputs):
        out.append(f"       a{i} = {o.sql()}")
    out.append("")
    if plan.grid.groups:
        out.append("Cells: " + " × ".join(f"{g.name} ({len(g.domain)})" for g in plan.grid.groups)
                   + f" = {plan.grid.size}")
    out.append("Leakage declaration (everything that is opened):")
    for l in plan.leakage:
        out.append(f"  - {l.what}: {l.count} values — {l.why}")
    return "\n".join(out)
