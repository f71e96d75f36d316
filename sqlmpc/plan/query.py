"""A bound query: the values binding produces and every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from sqlmpc.catalog import Column, Federation, Role, Table
from sqlmpc.sql.functions import AGGREGATES as AGGREGATE_FUNCTIONS

AGGREGATES: tuple[type[exp.Expression], ...] = tuple(dict.fromkeys(a.node for a in AGGREGATE_FUNCTIONS.values()))

# Functions whose output domain is the set of their literal results: they bin a measure.
# (WIDTH_BUCKET arrives here as such a CASE: see sqlmpc/sql/binning.py.)
BINNING = (exp.Case, exp.If)


def is_aggregate(node: exp.Expression) -> bool:
    return isinstance(node, AGGREGATES)


def is_match_test(col: exp.Column) -> bool:
    """``key IS [NOT] NULL``: whether a LEFT JOIN found a match, the one allowed test of a key."""
    parent = col.parent
    return isinstance(parent, exp.Is) and parent.this is col and isinstance(parent.expression, exp.Null)


@dataclass(frozen=True)
class RelationPart:
    """One party's share of a relation: a table and how it maps to the relation's columns."""

    party: str
    table: Table
    columns: tuple[tuple[str, exp.Expression], ...]   # relation column name -> expression over the table
    where: exp.Expression | None = None                 # filter inside a UNION ALL branch


@dataclass(frozen=True)
class Relation:
    """A FROM item: a party's table, or a UNION ALL of tables across parties."""

    alias: str
    parts: tuple[RelationPart, ...]
    columns: tuple[Column, ...]        # the relation's columns (roles merged over parts)

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.party for p in self.parts))

    @property
    def is_horizontal(self) -> bool:
        return len(self.parts) > 1

    @property
    def key(self) -> Column:
        return next(c for c in self.columns if c.role is Role.KEY)

    @property
    def rows_per_key(self) -> int:
        """The most rows one key value may have here, as its tables declare (a UNION ALL adds its parts)."""
        return sum(p.table.key.rows_per_key for p in self.parts)

    def column(self, name: str) -> Column | None:
        lname = name.lower()
        return next((c for c in self.columns if c.name.lower() == lname), None)

    @property
    def description(self) -> str:
        return " UNION ALL ".join(p.table.qualified_name for p in self.parts)


@dataclass(frozen=True)
class Join:
    """``kind JOIN relation ON a.key = b.key``; ``pairs`` are ((alias, col), (alias, col))."""

    relation: str
    kind: str                                           # "inner" | "left"
    pairs: tuple[tuple[tuple[str, str], tuple[str, str]], ...]


@dataclass
class BoundQuery:
    """A validated SELECT whose columns are qualified by relation alias."""

    federation: Federation
    sql: str
    relations: dict[str, Relation]                     # in FROM order
    joins: list[Join]
    select: list[tuple[str, exp.Expression]]           # output name, expression
    where: list[exp.Expression]                        # conjuncts
    group_by: list[exp.Expression]
    having: exp.Expression | None
    order_by: list[exp.Ordered]
    limit: int | None
    offset: int | None
    nullable_relations: frozenset[str] = field(default_factory=frozenset)  # right sides of LEFT JOINs
    tree: exp.Expression | None = None                 # the query as parsed (parameters in), unbound
    text: str = ""                                     # its canonical text: what parties plan, what is hashed

    def relations_of(self, node: exp.Expression) -> set[str]:
        return {c.table for c in node.find_all(exp.Column)}

    def column_of(self, col: exp.Column) -> Column:
        return self.relations[col.table].column(col.name)

    @property
    def root(self) -> Relation:
        return next(iter(self.relations.values()))


def conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    node = node.unnest()
    if isinstance(node, exp.And):
        return conjuncts(node.this) + conjuncts(node.expression)
    return [node]
