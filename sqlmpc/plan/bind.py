"""Binding: resolve a parsed SELECT against the catalog and check the policy.

The result, a :class:`BoundQuery`, has every column qualified by the alias of
the relation it comes from, GROUP BY / ORDER BY references resolved, and the
federation's column-role rules checked (docs/federation.md, column roles).  Each refusal is a
specific :class:`~sqlmpc.errors.PolicyError` pointing at the offending token.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Column, Federation, Role, Table
from sqlmpc.plan.typecheck import check_types
from sqlmpc.sql.functions import AGGREGATES as AGGREGATE_FUNCTIONS
from sqlmpc.sql.positions import node_position

AGGREGATES: tuple[type[exp.Expression], ...] = tuple(dict.fromkeys(a.node for a in AGGREGATE_FUNCTIONS.values()))
MAX_ROWS = 2**63 - 1        # LIMIT and OFFSET: DuckDB's BIGINT

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


# --------------------------------------------------------------------------


_pos = node_position   # the older name (sqlmpc/plan/release.py uses it)


def conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    node = node.unnest()
    if isinstance(node, exp.And):
        return conjuncts(node.this) + conjuncts(node.expression)
    return [node]


class Binder:
    def __init__(self, federation: Federation, sql: str):
        self.fed = federation
        self.sql = sql

    def error(self, cls, message: str, node: exp.Expression | None, **kwargs):
        pos = node_position(node) if node is not None else {}
        return cls(message, sql=self.sql, **pos, **kwargs)

    # -- FROM ------------------------------------------------------------

    def table(self, node: exp.Table) -> Table:
        party, name = node.db, node.name
        if not party:
            raise self.error(errors.UnknownTableError, f"table '{name}' is not qualified by a party", node,
                             hint="tables are named party.table, e.g. hospital.patients")
        if self.fed.party(party) is None:
            raise self.error(errors.UnknownTableError, f"unknown party '{party}'", node,
                             hint="parties: " + ", ".join(self.fed.party_names))
        table = self.fed.table(party, name)
        if table is None:
            known = ", ".join(t.name for t in self.fed.party(party).tables)
            raise self.error(errors.UnknownTableError, f"party '{party}' has no table '{name}'", node,
                             hint=f"tables of {party}: {known}")
        return table

    def relation(self, node: exp.Expression) -> Relation:
        if isinstance(node, exp.Table):
            table = self.table(node)
            alias = node.alias or table.name
            part = RelationPart(table.party, table,
                                tuple((c.name, exp.column(c.name)) for c in table.columns))
            return Relation(alias, (part,), table.columns)
        if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Union):
            return self.union(node)
        raise self.error(errors.UnsupportedSqlError, "unsupported FROM item", node,
                         hint="FROM party.table, or FROM (SELECT ... UNION ALL SELECT ...) AS alias")

    def union(self, node: exp.Subquery) -> Relation:
        if not node.alias:
            raise self.error(errors.SqlSyntaxError, "a UNION ALL subquery needs an alias", node,
                             hint="FROM (SELECT ... UNION ALL SELECT ...) AS u")
        branches: list[exp.Select] = []

        def collect(u: exp.Expression):
            if isinstance(u, exp.Union):
                if u.args.get("distinct"):
                    raise self.error(errors.UnsupportedSqlError, "UNION without ALL is not supported", u,
                                     hint="use UNION ALL; duplicates are persons' rows, not errors")
                collect(u.this)
                collect(u.expression)
            else:
                branches.append(u)
        collect(node.this)

        parts, names, columns = [], None, None
        for sel in branches:
            frm = sel.args.get("from_")
            if sel.args.get("joins") or sel.args.get("group") or not isinstance(frm.this, exp.Table):
                raise self.error(errors.UnsupportedSqlError, "each UNION ALL branch selects from one table",
                                 sel, hint="SELECT col, ... FROM party.table [WHERE ...]")
            table = self.table(frm.this)
            talias = frm.this.alias_or_name
            mapping, cols = [], []
            for item in sel.expressions:
                inner = item.this if isinstance(item, exp.Alias) else item
                if not isinstance(inner, exp.Column):
                    raise self.error(errors.UnsupportedSqlError,
                                     "UNION ALL branches select plain columns", item,
                                     hint="compute expressions in the outer query")
                if inner.table and inner.table != talias:
                    raise self.error(errors.UnknownColumnError, f"unknown table alias '{inner.table}'", inner)
                col = table.column(inner.name)
                if col is None:
                    raise self.error(errors.UnknownColumnError,
                                     f"column '{inner.name}' not found in {table.qualified_name}", inner)
                mapping.append((item.alias_or_name, exp.column(col.name)))
                cols.append(col)
            where = sel.args.get("where")
            if where is not None:
                for c in where.find_all(exp.Column):
                    if table.column(c.name) is None:
                        raise self.error(errors.UnknownColumnError,
                                         f"column '{c.name}' not found in {table.qualified_name}", c)
                    c.set("table", None)
            part_names = [n for n, _ in mapping]
            if names is None:
                names, columns = part_names, cols
            elif len(part_names) != len(names):
                raise self.error(errors.SqlSyntaxError,
                                 "UNION ALL branches must select the same number of columns", sel)
            else:
                columns = [self.merge_columns(a, b, sel) for a, b in zip(columns, cols)]
            parts.append(RelationPart(table.party, table, tuple(zip(names, (e for _, e in mapping))),
                                      where.this if where is not None else None))
        merged = tuple(Column(**{**c.__dict__, "name": n}) for n, c in zip(names, columns))
        if sum(c.role is Role.KEY for c in merged) != 1:
            raise self.error(errors.PolicyError, "a UNION ALL subquery must select exactly one key column",
                             node, hint="select the person key (e.g. pid) in every branch")
        return Relation(node.alias, tuple(parts), merged)

    def merge_columns(self, a: Column, b: Column, node) -> Column:
        if a.role is not b.role:
            raise self.error(errors.PolicyError,
                             f"UNION ALL column '{b.name}' is a {b.role.value} here but a {a.role.value} "
                             "in the first branch", node)
        domain = None
        if a.domain is not None:
            domain = tuple(dict.fromkeys((*a.domain, *(b.domain or ()))))
        rng = None
        if a.range is not None and b.range is not None:
            rng = (min(a.range[0], b.range[0]), max(a.range[1], b.range[1]))
        key_space = a.key_space if a.key_space == b.key_space else None
        return Column(a.name, a.type, a.role, domain, rng, max(a.scale, b.scale), key_space,
                      a.unique and b.unique, a.nullable or b.nullable)

    # -- columns -----------------------------------------------------------

    def resolve(self, node: exp.Expression, relations: dict[str, Relation]) -> None:
        """Qualify every column of ``node`` in place with its relation alias."""
        for col in list(node.find_all(exp.Column)):
            name = col.name
            if col.table:
                rel = relations.get(col.table)
                if rel is None:
                    raise self.error(errors.UnknownColumnError, f"unknown table alias '{col.table}'", col,
                                     hint="aliases in scope: " + ", ".join(relations))
                if rel.column(name) is None:
                    raise self.error(errors.UnknownColumnError,
                                     f"column '{name}' not found in {col.table} ({rel.description})", col,
                                     hint=_did_you_mean(name, [c.name for c in rel.columns]))
                continue
            owners = [a for a, r in relations.items() if r.column(name) is not None]
            if not owners:
                everything = [c.name for r in relations.values() for c in r.columns]
                raise self.error(errors.UnknownColumnError, f"column '{name}' does not exist", col,
                                 hint=_did_you_mean(name, everything))
            if len(owners) > 1:
                raise self.error(errors.AmbiguousColumnError, f"column '{name}' is ambiguous", col,
                                 hint="qualify it: " + " or ".join(f"{a}.{name}" for a in owners))
            col.set("table", exp.to_identifier(owners[0]))

    def role(self, col: exp.Column, relations) -> Column:
        return relations[col.table].column(col.name)

    # -- the statement -----------------------------------------------------

    def bind(self, tree: exp.Expression) -> BoundQuery:
        if not isinstance(tree, exp.Select):
            raise self.error(errors.UnsupportedSqlError, "only SELECT queries can be run", tree)
        parsed, tree = tree, tree.copy()
        relations: dict[str, Relation] = {}
        frm = tree.args.get("from_")
        if frm is None:
            raise self.error(errors.SqlSyntaxError, "a query needs a FROM clause", tree,
                             hint="e.g. SELECT COUNT(*) FROM hospital.patients")

        def add(node):
            rel = self.relation(node)
            if rel.alias in relations:
                raise self.error(errors.SqlSyntaxError, f"table alias '{rel.alias}' is used twice", node,
                                 hint="give each table its own alias")
            relations[rel.alias] = rel
            return rel

        add(frm.this)
        joins, nullable = [], set()
        for j in tree.args.get("joins") or []:
            rel = add(j.this)
            side = (j.side or "").upper()
            kind = (j.kind or "").upper()
            if side not in ("", "LEFT") or kind in ("CROSS", "FULL", "OUTER") and side != "LEFT":
                raise self.error(errors.UnsupportedSqlError, f"{side or kind} JOIN is not supported", j,
                                 hint="use [INNER] JOIN or LEFT JOIN ... ON a.key = b.key")
            on = j.args.get("on")
            if on is None:
                raise self.error(errors.UnsupportedSqlError, "a JOIN needs ON a.key = b.key", j,
                                 hint="join on the pseudonymous key, e.g. ON p.pid = c.pid")
            self.resolve(on, relations)
            pairs = []
            for cond in conjuncts(on):
                if not (isinstance(cond, exp.EQ) and isinstance(cond.this, exp.Column)
                        and isinstance(cond.expression, exp.Column)):
                    raise self.error(errors.JoinPolicyError, "joins are equalities of key columns", cond,
                                     hint="ON a.pid = b.pid [AND ...]")
                a, b = cond.this, cond.expression
                ca, cb = self.role(a, relations), self.role(b, relations)
                for c, cc in ((a, ca), (b, cb)):
                    if cc.role is not Role.KEY:
                        raise self.error(errors.JoinPolicyError,
                                         f"'{c.table}.{c.name}' is a {cc.role.value}, not a key; "
                                         "joins are on key columns only", c, column_name=c.name,
                                         hint="join on the pseudonymous key, e.g. ON p.pid = c.pid")
                if a.table == b.table or rel.alias not in (a.table, b.table):
                    raise self.error(errors.JoinPolicyError,
                                     f"the ON clause must link {rel.alias} to an earlier table", cond)
                if ca.key_space != cb.key_space:
                    raise self.error(errors.JoinPolicyError,
                                     f"keys '{a.table}.{a.name}' ({ca.key_space}) and '{b.table}.{b.name}' "
                                     f"({cb.key_space}) are from different key spaces", cond)
                for pa in relations[a.table].parties:
                    for pb in relations[b.table].parties:
                        if not self.fed.policy.may_join(pa, pb):
                            raise self.error(errors.JoinPolicyError,
                                             f"the federation does not allow joining {pa} with {pb}", cond)
                pairs.append(((a.table, a.name), (b.table, b.name)))
            joins.append(Join(rel.alias, "left" if side == "LEFT" else "inner", tuple(pairs)))
            if side == "LEFT":
                nullable.add(rel.alias)

        # SELECT list; aliases are remembered for GROUP BY / ORDER BY / HAVING references.
        select: list[tuple[str, exp.Expression]] = []
        for i, item in enumerate(tree.expressions):
            if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
                raise self.error(errors.PersonLevelOutputError, "SELECT * would release person-level rows",
                                 item, hint="select dimensions and aggregates, e.g. SELECT region, COUNT(*)")
            name = item.alias_or_name if isinstance(item, (exp.Alias, exp.Column)) else None
            expr = item.this if isinstance(item, exp.Alias) else item
            select.append((name or _default_name(expr, i), expr))
        aliases = {n.lower(): e for n, e in select if n}

        for _, expr in select:
            self.resolve(expr, relations)
        where = tree.args.get("where")
        where = conjuncts(where.this) if where is not None else []
        for c in where:
            self.resolve(c, relations)

        group_by = []
        group = tree.args.get("group")
        for g in (group.expressions if group else []):
            group_by.append(self.reference(g, select, aliases, relations, "GROUP BY"))
        having = tree.args.get("having")
        having = self.substitute_aliases(having.this, aliases, relations) if having is not None else None
        order_by = []
        order = tree.args.get("order")
        for o in (order.expressions if order else []):
            o = o.copy()
            o.set("this", self.reference(o.this, select, aliases, relations, "ORDER BY"))
            order_by.append(o)
        limit = self.int_clause(tree.args.get("limit"), "LIMIT")
        offset = self.int_clause(tree.args.get("offset"), "OFFSET")

        bq = BoundQuery(self.fed, self.sql, relations, joins, select, where, group_by, having,
                        order_by, limit, offset, frozenset(nullable), parsed, parsed.sql("duckdb"))
        Policy(self, bq).check()
        check_types(bq)
        return bq

    def int_clause(self, node, clause: str) -> int | None:
        if node is None:
            return None
        value = node.expression if node.expression is not None else node.this
        if not (isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit()):
            raise self.error(errors.SqlSyntaxError, f"{clause} takes a whole number", value,
                             hint=f"e.g. {clause} 10")
        if int(value.this) > MAX_ROWS:
            raise self.error(errors.SqlSyntaxError, f"{clause} {value.this} is larger than {MAX_ROWS:,}", value,
                             hint=f"leave out {clause}, or give a smaller number")
        return int(value.this)

    def reference(self, node, select, aliases, relations, clause: str) -> exp.Expression:
        """Resolve an ordinal or an output alias in GROUP BY / ORDER BY to its expression."""
        if isinstance(node, exp.Literal) and not node.is_string:
            idx = int(node.this)
            if not 1 <= idx <= len(select):
                raise self.error(errors.SqlSyntaxError,
                                 f"{clause} position {idx} is not in the select list (1..{len(select)})", node)
            return self.not_constant(select[idx - 1][1].copy(), node, clause)
        if isinstance(node, (exp.Literal, exp.Boolean, exp.Null)):
            raise self.error(errors.SqlSyntaxError, f"{clause} a constant has no effect", node,
                             hint=f"{clause} a selected column, its alias or its position (1, 2, ...)")
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in aliases:
            if not any(r.column(node.name) for r in relations.values()):
                return self.not_constant(aliases[node.name.lower()].copy(), node, clause)
        node = node.copy()
        self.resolve(node, relations)
        return node

    def not_constant(self, target, node, clause: str) -> exp.Expression:
        """A position or alias naming a constant select item: ordering by it has no effect (and
        DuckDB would read an integer constant as a position again)."""
        if not any(True for _ in target.find_all(exp.Column, *AGGREGATES)):
            raise self.error(errors.SqlSyntaxError, f"{clause} {node.sql()} names the constant {target.sql()}, "
                             "which has no effect", node,
                             hint=f"{clause} a selected column, its alias or its position (1, 2, ...)")
        return target

    def substitute_aliases(self, node, aliases, relations):
        node = node.copy()
        for col in list(node.find_all(exp.Column)):
            if not col.table and col.name.lower() in aliases and not any(
                    r.column(col.name) for r in relations.values()):
                replacement = aliases[col.name.lower()].copy()
                if col is node:
                    return replacement
                col.replace(replacement)
        self.resolve(node, relations)
        return node


class Policy:
    """The column-role rules (docs/federation.md), checked on a bound query."""

    def __init__(self, binder: Binder, bq: BoundQuery):
        self.b = binder
        self.q = bq

    def err(self, cls, message, node, **kw):
        return self.b.error(cls, message, node, **kw)

    def col(self, c: exp.Column) -> Column:
        return self.q.relations[c.table].column(c.name)

    def check(self) -> None:
        q = self.q
        for cond in q.where:
            if any(is_aggregate(n) for n in cond.find_all(*AGGREGATES)):
                raise self.err(errors.SqlSyntaxError, "aggregates are not allowed in WHERE",
                               next(cond.find_all(*AGGREGATES)), hint="filter aggregates with HAVING")
            self.row_expression(cond, "WHERE", allow_measures=True, filter_relations=True)
        for g in q.group_by:
            self.group_expression(g)
        group_sql = {g.sql() for g in q.group_by}
        for name, expr in q.select:
            self.output(expr, group_sql)
        if q.having is not None:
            self.output(q.having, group_sql, clause="HAVING")
        for o in q.order_by:
            self.output(o.this, group_sql, clause="ORDER BY")

    def row_expression(self, node, clause, *, allow_measures: bool, filter_relations: bool = False):
        """Check a row-level expression (WHERE, FILTER, aggregate argument)."""
        rels = self.q.relations_of(node)
        for c in node.find_all(exp.Column):
            col = self.col(c)
            if col.role is Role.KEY and not is_match_test(c):
                raise self.err(errors.KeyColumnPolicyError,
                               f"key column '{c.table}.{c.name}' may only be used in JOIN ... ON and "
                               "COUNT(DISTINCT ...)", c, column_name=c.name,
                               hint="keys are pseudonyms: they are never compared, selected or grouped")
            if col.role is Role.MEASURE and not allow_measures:
                raise self.err(errors.MeasurePolicyError,
                               f"measure '{c.table}.{c.name}' may only be used inside an aggregate", c,
                               column_name=c.name, hint=f"e.g. SUM({c.table}.{c.name}) or AVG(...)")
            if col.role is Role.ATTRIBUTE and (not filter_relations or len(rels) > 1):
                raise self.err(errors.AttributePolicyError,
                               f"attribute '{c.table}.{c.name}' may only filter rows at its owner "
                               "(a WHERE condition on its own table)", c, column_name=c.name)

    def group_expression(self, g: exp.Expression):
        cols = list(g.find_all(exp.Column))
        if any(is_aggregate(n) for n in g.find_all(*AGGREGATES)):
            raise self.err(errors.GroupByPolicyError, "cannot GROUP BY an aggregate", g)
        if not cols:
            raise self.err(errors.GroupByPolicyError, "GROUP BY needs a column", g)
        rels = self.q.relations_of(g)
        if len(rels) > 1:
            raise self.err(errors.GroupByPolicyError,
                           "a GROUP BY expression must use the columns of one table", g,
                           hint="group by each table's dimension separately")
        binned = isinstance(g, BINNING)
        for c in cols:
            col = self.col(c)
            if col.role is Role.DIMENSION:
                continue
            if col.role is Role.MEASURE and binned:
                continue
            if col.role is Role.KEY and binned and is_match_test(c):
                continue
            if col.role is Role.KEY:
                raise self.err(errors.KeyColumnPolicyError,
                               f"cannot GROUP BY the key column '{c.table}.{c.name}'", c, column_name=c.name,
                               hint="a group per person would release person-level rows")
            raise self.err(errors.GroupByPolicyError,
                           f"cannot GROUP BY {col.role.value} '{c.table}.{c.name}': only dimensions have a "
                           "public domain", c, column_name=c.name,
                           hint="bin a measure with CASE WHEN ... THEN 'label' ... END or WIDTH_BUCKET")

    def output(self, node, group_sql: set[str], clause: str = "SELECT"):
        """An output expression: group-by expressions and aggregates combined with literals."""
        if node.sql() in group_sql:
            return
        if is_aggregate(node):
            self.aggregate(node)
            return
        if isinstance(node, exp.Filter):
            if not is_aggregate(node.this):
                raise self.err(errors.SqlSyntaxError, "FILTER applies to aggregates only", node)
            self.aggregate(node.this)
            self.row_expression(node.expression.this, "FILTER", allow_measures=True)
            return
        if isinstance(node, exp.Column):
            col = self.col(node)
            if col.role is Role.KEY:
                raise self.err(errors.KeyColumnPolicyError,
                               f"key column '{node.table}.{node.name}' cannot be output", node, column_name=node.name,
                               hint="count persons with COUNT(DISTINCT key) instead")
            raise self.err(errors.PersonLevelOutputError,
                           f"'{node.table}.{node.name}' is neither grouped nor aggregated ({clause})", node,
                           column_name=node.name,
                           hint="add it to GROUP BY or wrap it in an aggregate"
                           if col.role is Role.DIMENSION else f"aggregate it, e.g. AVG({node.table}.{node.name})")
        for child in node.iter_expressions():
            self.output(child, group_sql, clause)

    def aggregate(self, agg: exp.Expression):
        inner = [n for n in agg.iter_expressions() if any(is_aggregate(x) for x in n.find_all(*AGGREGATES))]
        if inner:
            raise self.err(errors.SqlSyntaxError, "aggregates cannot be nested", inner[0])
        if isinstance(agg, exp.Count) and isinstance(agg.this, exp.Distinct):
            args = agg.this.expressions
            if len(args) != 1 or not isinstance(args[0], exp.Column) or self.col(args[0]).role is not Role.KEY:
                raise self.err(errors.PolicyError, "COUNT(DISTINCT ...) counts persons: use a key column",
                               agg, hint="e.g. COUNT(DISTINCT p.pid)")
            return
        for arg in agg.iter_expressions():
            if isinstance(arg, exp.Star):
                continue
            self.row_expression(arg, "aggregate", allow_measures=True)


def _did_you_mean(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=3)
    return "did you mean " + " or ".join(repr(c) for c in close) + "?" if close else None


def _default_name(expr: exp.Expression, i: int) -> str:
    text = expr.sql("duckdb")
    return text if len(text) <= 40 else f"col{i + 1}"


def bind(tree: exp.Expression, federation: Federation, sql: str = "") -> BoundQuery:
    return Binder(federation, sql or tree.sql("duckdb")).bind(tree)
