"""Federation catalog: parties, their tables and columns, roles and policy (TOML).

This module holds the typed values every other layer uses.  The loader
(``load_federation``) validates the file and reports each mistake with its
file, line and TOML key path.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Role(enum.Enum):
    KEY = "key"              # join equality / COUNT(DISTINCT) only
    DIMENSION = "dimension"  # GROUP BY, WHERE; has a public domain
    MEASURE = "measure"      # aggregates, WHERE; has a declared range
    ATTRIBUTE = "attribute"  # local WHERE at its owner only


@dataclass(frozen=True)
class Column:
    name: str
    type: str                                   # DuckDB type name: INTEGER, BIGINT, DOUBLE, VARCHAR, DATE, BOOLEAN
    role: Role
    domain: tuple | None = None                 # dimension: the public list of values
    range: tuple[float, float] | None = None    # measure: [lo, hi] inclusive
    scale: int = 0                              # measure: decimal digits kept in fixed point
    key_space: str | None = None                # key: e.g. "pseudonym"
    unique: bool = False                        # key: at most one row per key value
    nullable: bool = True                       # keys are never nullable


@dataclass(frozen=True)
class Table:
    party: str
    name: str
    source: Path                                # absolute path of the data file
    format: str                                 # "parquet" | "csv" | "duckdb"
    columns: tuple[Column, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.party}.{self.name}"

    def column(self, name: str) -> Column | None:
        lname = name.lower()
        return next((c for c in self.columns if c.name.lower() == lname), None)

    @property
    def key(self) -> Column | None:
        return next((c for c in self.columns if c.role is Role.KEY), None)


@dataclass(frozen=True)
class Party:
    name: str
    address: str                                # "host:port" of the party's control endpoint
    tables: tuple[Table, ...] = ()

    def table(self, name: str) -> Table | None:
        lname = name.lower()
        return next((t for t in self.tables if t.name.lower() == lname), None)


@dataclass(frozen=True)
class Dominance:
    """(n, p)-dominance: a cell is suppressed if its n largest contributors make up more than p % of its sum."""

    n: int
    percent: float


@dataclass(frozen=True)
class Policy:
    min_cell_size: int = 10
    joins: frozenset[frozenset[str]] | None = None   # allowed party pairs; None = every pair
    dominance: Dominance | None = None
    analysts: frozenset[str] | None = None           # who may ask; None = anyone authenticated

    def may_join(self, a: str, b: str) -> bool:
        return a == b or self.joins is None or frozenset((a, b)) in self.joins


@dataclass(frozen=True)
class Federation:
    name: str
    parties: tuple[Party, ...]
    policy: Policy = field(default_factory=Policy)
    insecure_demo: bool = False
    path: Path | None = field(default=None, compare=False)
    fingerprint: str = ""                            # sha256 of the canonical catalog content

    def party(self, name: str) -> Party | None:
        lname = name.lower()
        return next((p for p in self.parties if p.name.lower() == lname), None)

    def table(self, party: str, name: str) -> Table | None:
        p = self.party(party)
        return p.table(name) if p else None

    @property
    def tables(self) -> tuple[Table, ...]:
        return tuple(t for p in self.parties for t in p.tables)

    @property
    def party_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parties)
