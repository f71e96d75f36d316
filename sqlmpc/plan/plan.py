"""The plan: a value every party can compute, print, hash and compare.

A plan has a *local part* per party and relation (DuckDB SQL over the party's
own tables, generated with sqlglot) and a *secure part*: how the parties'
local results are combined in MPC (join, row flags, moments per cell,
threshold, outputs) and what that will open (the leakage declaration).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction

from sqlglot import exp

from sqlmpc.plan.query import Join
from sqlmpc.plan.cells import CellGrid


@dataclass(frozen=True)
class LocalColumn:
    """A column of a local result, as it enters MPC (integers only)."""

    name: str
    kind: str            # "key" | "cell" | "value" | "flag"
    scale: int = 0       # value = round(x * 10**scale)
    bound: int = 1       # |value| <= bound; sets bit lengths
    absent: int = 0      # the value a LEFT JOIN gives a row with no match (cell code, flag constant)


@dataclass(frozen=True)
class LocalPart:
    """What one party computes alone for one relation (one branch of a UNION ALL)."""

    relation: str
    party: str
    part: int
    sql: str
    columns: tuple[LocalColumn, ...]
    cells: int = 1       # size of this relation's own group grid

    def column(self, name: str) -> LocalColumn:
        return next(c for c in self.columns if c.name == name)


KEYED = ("cellkey", "rowkey")     # moments that sum record keys: a perturbed release's cell keys


@dataclass(frozen=True)
class Moment:
    """Σ over the rows of a cell of ``weight · expr``; exprs are over ``rel.column`` locals."""

    name: str
    expr: exp.Expression                  # secure row expression (exp.Literal 1 for a count)
    kind: str = "sum"                     # "sum" | "persons" | "sum2" | "cellkey" | "rowkey"
    # sum2: Σ over the cell's persons of (Σ of expr over the person's rows)², for dominance
    # cellkey: Σ over the cell's persons with expr = 1 of their record key (sqlmpc.plan.perturbation)
    # rowkey: Σ over the cell's rows of expr × the row's person's record key: a row-level release's
    #         cell key, which moves when any of its rows goes, not only when a whole person does


@dataclass(frozen=True)
class Guard:
    """One release condition a cell must meet (sqlmpc.plan.release).

    ``contributors``: the persons moment ``moments[0]`` is at least k.
    ``dominance``: C·S2 ≤ S1² for S1, S2 = ``moments`` (sum and sum of squares of contributions).
    ``extreme``: ``moments`` count the persons holding each value of a MIN/MAX's dimension, from the
    extreme end; the first value held by anyone is held by at least k persons.
    """

    kind: str                              # "contributors" | "dominance" | "extreme"
    moments: tuple[str, ...]
    constant: Fraction | None = None


@dataclass(frozen=True)
class Leak:
    """One line of the leakage declaration: what is opened, how many values, why."""

    what: str
    count: str           # how many, in terms of run-time sizes (e.g. "12 × released cells")
    why: str
    per_cell: int = 0    # for per-cell openings: values opened per (released) cell


def opened_per_cell(formula: exp.Expression) -> int:
    """How many values the release of one output formula opens per released cell.

    A formula without a secret denominator is opened as is (1); a ratio opens
    num·r and den·r (2); a correlation opens its square as a ratio and its sign (3).
    """
    if isinstance(formula, exp.Anonymous) and formula.name == "IF_UNDEFINED":
        return opened_per_cell(formula.expressions[0]) + 2      # and guard·r, guard·r
    if isinstance(formula, exp.Sqrt):
        return opened_per_cell(formula.this)
    if isinstance(formula, exp.Div) and isinstance(formula.expression, exp.Sqrt):
        return 3
    secret_denominator = any(any(c.table == "M" for c in d.expression.find_all(exp.Column))
                             for d in formula.find_all(exp.Div))
    return 2 if secret_denominator else 1


@dataclass(frozen=True)
class Plan:
    sql: str
    fingerprint: str                       # the federation catalog's hash
    mode: str                              # "local": per-cell pre-aggregation; "join": row-level MPC
    relations: tuple[str, ...]
    joins: tuple[Join, ...]
    nullable: tuple[str, ...]
    parts: tuple[LocalPart, ...]
    row_filter: exp.Expression | None      # secure 0/1 flag per joined row
    grid: CellGrid
    cell_relations: tuple[str, ...]        # relations holding group codes, in Kronecker order
    moments: tuple[Moment, ...]
    outputs: tuple[exp.Expression, ...]    # per aggregate item: formula over moments (M.name)
    having: exp.Expression | None
    min_cell_size: int
    leakage: tuple[Leak, ...]
    per_key: bool = False                  # groups pre-aggregated per key and cell: a person is one row per cell
    guards: tuple[Guard, ...] = ()         # what a cell must meet to be released (sqlmpc.plan.release)
    query: object = field(default=None, compare=False, repr=False)   # the BoundQuery planned (for the result)
    perturbation: object = None            # a PerturbationSpec (sqlmpc.plan.perturbation) or None: exact release
    # Per relation: the most rows one key value may have in its local join, as the catalog declares
    # (unique, max_rows); with the plan's sizes it bounds every moment, and so the fields' sizes.
    rows_per_key: tuple[int, ...] = ()

    def parts_of(self, relation: str) -> tuple[LocalPart, ...]:
        return tuple(p for p in self.parts if p.relation == relation)

    def parts_at(self, party: str) -> tuple[LocalPart, ...]:
        return tuple(p for p in self.parts if p.party == party)

    def canonical(self) -> str:
        """A deterministic text of everything that decides what the parties compute and open."""
        return json.dumps({
            "sql": self.sql, "catalog": self.fingerprint, "mode": self.mode,
            "relations": self.relations, "nullable": self.nullable,
            "joins": [[j.relation, j.kind, [list(map(list, p)) for p in j.pairs]] for j in self.joins],
            "parts": [[p.relation, p.party, p.part, p.sql, [c.__dict__ for c in p.columns], p.cells]
                      for p in self.parts],
            "row_filter": self.row_filter.sql() if self.row_filter is not None else None,
            "grid": [[g.name, g.relation, [repr(v) for v in g.domain]] for g in self.grid.groups],
            "cell_relations": self.cell_relations,
            "moments": [[m.name, m.kind, m.expr.sql()]
                        for m in self.moments],
            "outputs": [o.sql() for o in self.outputs],
            "having": self.having.sql() if self.having is not None else None,
            "k": self.min_cell_size, "per_key": self.per_key, "rows_per_key": self.rows_per_key,
            "guards": [[g.kind, list(g.moments), str(g.constant)] for g in self.guards],
            "leakage": [l.__dict__ for l in self.leakage],
            **({"perturbation": self.perturbation.canonical()} if self.perturbation is not None else {}),
        }, sort_keys=True, default=str)

    @property
    def digest(self) -> str:
        """A hash every party computes independently and compares before any share is sent."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()
