"""Binding: resolve a parsed SELECT against the catalog and check the policy.

The result, a :class:`BoundQuery`, has every column qualified by the alias of
the relation it comes from, GROUP BY / ORDER BY references resolved, and the
federation's column-role rules checked (docs/federation.md, column roles).  Each refusal is a
specific :class:`~sqlmpc.errors.PolicyError` pointing at the offending token.
"""

from __future__ import annotations

import difflib

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Column, Federation, Role, Table
from sqlmpc.plan.query import AGGREGATES, BoundQuery, Join, Relation, RelationPart, conjuncts
from sqlmpc.plan.roles import RolePolicy
from sqlmpc.plan.totality import check_total
from sqlmpc.plan.typecheck import check_types
from sqlmpc.sql.positions import node_position

MAX_ROWS = 2**63 - 1        # LIMIT and OFFSET: DuckDB's BIGINT


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
        # A person may be in several branches: the union's rows per key are its parts' (Relation.rows_per_key).
        return Column(a.name, a.type, a.role, domain, rng, max(a.scale, b.scale), key_space,
                      False, a.nullable or b.nullable)

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
        RolePolicy(self, bq).check()
        check_types(bq, check_total)
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


def _did_you_mean(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=3)
    return "did you mean " + " or ".join(repr(c) for c in close) + "?" if close else None


def _default_name(expr: exp.Expression, i: int) -> str:
    text = expr.sql("duckdb")
    return text if len(text) <= 40 else f"col{i + 1}"


def bind(tree: exp.Expression, federation: Federation, sql: str = "") -> BoundQuery:
    return Binder(federation, sql or tree.sql("duckdb")).bind(tree)
