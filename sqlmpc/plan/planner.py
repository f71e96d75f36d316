"""Planning: split a bound query into local parts and a secure part.

Everything that touches one relation only is computed by its owner in DuckDB
(filters, CASE/binning, products like x*x, the group code of its own
dimensions); only what spans relations is left to MPC.  Aggregates become
*moments* (Σ over a cell of a row expression) and each output is a formula
over moments, evaluated per cell in MPC and released as an exact ratio.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.plan.typecheck import scratch
from sqlmpc.plan.query import BoundQuery, Join, Relation, RelationPart
from sqlmpc.plan.build import ONE, flag, is_flag, times
from sqlmpc.plan.canonical import case_has_value, case_sum
from sqlmpc.plan.cells import CellGrid, cell_grid
from sqlmpc.plan.formulas import Formulas, check_computable, check_releasable, parenthesize
from sqlmpc.plan.perturbation import PerturbationSpec, Target, perturbation_table
from sqlmpc.plan.nulls import sql_true
from sqlmpc.plan.local import (COMPARISONS, SECURE_OPS, LocalColumns, constant, local_groups, rescale,
                               scale_of)
from sqlmpc.plan.plan import Guard, Leak, LocalColumn, LocalPart, Moment, Plan, opened_per_cell
from sqlmpc.plan.release import margin_lines
from sqlmpc.result import aggregate_items
from sqlmpc.sql.functions import arguments, scalar_of
from sqlmpc.sql.params import literal
from sqlmpc.sql.positions import node_position


PERSON_SETS = ("persons", "cellkey")    # moments over each person once (MAX per key, not SUM)


class Planner:
    def __init__(self, q: BoundQuery, perturb: bool = False):
        self.q = q
        self.perturb = perturb              # cell-key perturbation of the released values
        self.grid: CellGrid = cell_grid(q)
        self.groups = local_groups(q)
        self.group_of = {a: g for g in self.groups.values() for a in g.members}
        self.locals = {name: LocalColumns(q, g) for name, g in self.groups.items()}
        self.pushed: dict[str, list[exp.Expression]] = {name: [] for name in self.groups}

    def groups_of(self, node: exp.Expression) -> set[str]:
        return {self.group_of[a].name for a in self.q.relations_of(node)}

    # -- splitting expressions --------------------------------------------

    def localize(self, node: exp.Expression) -> exp.Expression:
        """Rewrite a row expression so that every single-party subtree is a local column.

        What remains spans parties and runs in MPC on integers: each node's decimal
        scale is kept in ``meta["scale"]`` and the operands of + - and comparisons
        are brought to one scale by multiplying with a power of ten.
        """
        groups = self.groups_of(node)
        if not groups:
            return constant(node)
        if len(groups) == 1:
            return self.locals[next(iter(groups))].add(node.copy())
        if isinstance(node, exp.Paren):
            return self.localize(node.this)
        if is_flag(node):
            return self.localize(node.args["ifs"][0].this)
        if isinstance(node, exp.Case) and node.this is None:      # across parties: as arithmetic
            return self.localize(case_sum(node))
        if isinstance(node, exp.Is) and isinstance(node.this, exp.Case) and isinstance(node.expression, exp.Null):
            return self.localize(exp.Not(this=case_has_value(node.this)))
        if isinstance(node, exp.Between):
            return self.localize(exp.and_(exp.GTE(this=node.this.copy(), expression=node.args["low"].copy()),
                                          exp.LTE(this=node.this.copy(), expression=node.args["high"].copy())))
        function = scalar_of(node)
        if function is not None and function.secure is not None:
            return self.localize_function(node)
        if not isinstance(node, SECURE_OPS):
            raise errors.UnsupportedExpressionError(
                f"{node.sql('duckdb')} combines several parties' columns in a way sqlmpc cannot compute "
                "securely yet", sql=self.q.sql, **node_position(node),
                hint="across parties use + - * comparisons AND OR NOT, and CASE over one party's columns")
        out = node.copy()
        children = {k: self.localize(c) for k, c in node.args.items() if isinstance(c, exp.Expression)}
        if isinstance(node, (exp.Add, exp.Sub) + COMPARISONS):
            target = max(scale_of(c) for c in children.values())
            children = {k: rescale(c, target) for k, c in children.items()}
        for k, c in children.items():
            out.set(k, c)
        if isinstance(node, exp.Mul):
            scale = sum(scale_of(c) for c in children.values())
        elif isinstance(node, (exp.Add, exp.Sub, exp.Neg)):
            scale = max(scale_of(c) for c in children.values())
        else:
            scale = 0                                         # comparisons and logic give 0/1 flags
        out.meta["scale"] = scale
        return out

    def localize_function(self, node: exp.Expression) -> exp.Expression:
        """A registry function over several parties' columns (e.g. GREATEST): its arguments at one scale."""
        args = arguments(node)
        q = self.q
        nullable = [c for a in args for c in a.find_all(exp.Column)
                    if c.table in q.nullable_relations or q.column_of(c).nullable]
        if nullable:      # MPC holds no NULLs: an absent value would count as a value
            raise errors.UnsupportedExpressionError(
                f"{node.sql('duckdb')} combines several parties' columns, and {nullable[0].sql()} may be NULL",
                sql=q.sql, **node_position(node),
                hint=f"give it a value first, e.g. COALESCE({nullable[0].sql()}, 0), at its own party")
        children = [self.localize(a) for a in args]
        target = max(scale_of(c) for c in children)
        out = type(node)(this=rescale(children[0], target), expressions=[rescale(c, target) for c in children[1:]])
        out.meta["scale"] = target
        return out

    # -- the plan ----------------------------------------------------------

    def plan(self) -> Plan:
        q = self.q
        secure_where = []
        for cond in q.where:
            groups = self.groups_of(cond)
            if not groups:          # a constant: the root's owners apply it (every row stems from a root row)
                self.pushed[q.root.alias].append(cond)
            elif len(groups) == 1 and not self.groups[next(iter(groups))].nullable:
                self.pushed[next(iter(groups))].append(cond)
            else:
                secure_where.append(self.localize(sql_true(cond, q, self.groups_of)))
        row_filter = exp.and_(*secure_where) if secure_where else None

        cell_relations = tuple(dict.fromkeys(self.group_of[g.relation].name for g in self.grid.groups))
        moments: dict[str, Moment] = {}
        formulas = Formulas(self, moments)
        outputs = tuple(parenthesize(formulas.output(item)) for item in aggregate_items(q))
        having = parenthesize(formulas.output(q.having)) if q.having is not None else None
        for item, formula in zip(aggregate_items(q), outputs):
            check_computable(item, q)
            check_releasable(formula, item, q)
        if having is not None:
            check_computable(q.having, q, having=True)
            check_releasable(having, q.having, q, root_only=False)
        base = Guard("contributors", (formulas.persons().name,))       # the cell's own persons, first
        guards = (base,) + tuple(g for g in formulas.guards.values() if g != base)
        perturbation = self.perturbation(formulas) if self.perturb else None

        # One relation whose parts cannot share persons: each owner pre-aggregates per cell.
        root = q.root
        single = len(self.groups) == 1 and (not root.is_horizontal or root.key.key_space is None)
        # Per-key pre-aggregation: when every moment is a product of one factor per group and no
        # condition spans groups, Σ over joined rows = Σ over keys of Π_groups (Σ of the factor
        # over the group's rows of that key and cell).  Joins then become (nearly) 1:1.
        by_key = row_filter is None and all(_is_product(m.expr) for m in moments.values())
        # Perturbation needs each person's record key in MPC.  On one table the owner still sums
        # per cell itself, from one row per person and cell; only the cell keys need the persons
        # (sqlmpc/mpc/local_mode.py).  Without per-key sums the persons' rows go to join mode.
        mode = "local" if single and (perturbation is None or by_key) else "join"
        per_key = by_key and (mode == "join" or perturbation is not None)
        joins = self.secure_joins()
        keys = {a for j in joins for pair in j.pairs for _, a in pair} | {q.root.alias}
        sums = self.per_key_sums(moments) if per_key else {}
        parts = tuple(p for name in self.groups
                      for p in self.local_parts(name, mode, moments, keys, sums.get(name)))
        if per_key:
            moments = {n: replace(m, expr=sums["moments"][n]) for n, m in moments.items()}
        # The secure side knows groups, not the aliases inside them.
        grid = CellGrid(tuple(replace(g, relation=self.group_of[g.relation].name) for g in self.grid.groups))
        return Plan(
            sql=q.text, fingerprint=q.federation.fingerprint, mode=mode,
            relations=tuple(self.groups), joins=joins,
            nullable=tuple(n for n, g in self.groups.items() if g.nullable),
            parts=parts, row_filter=row_filter if mode == "join" else None, grid=grid,
            cell_relations=cell_relations, moments=tuple(moments.values()), outputs=outputs, having=having,
            min_cell_size=q.federation.policy.min_cell_size,
            leakage=self.leakage(mode, parts, outputs, having, perturbed=perturbation is not None)
            + (record_key_leak(mode) if perturbation else ()),
            per_key=per_key, guards=guards, query=q, perturbation=perturbation,
            rows_per_key=tuple(self.rows_per_key(name) for name in self.groups),
        )

    def perturbation(self, formulas: Formulas) -> PerturbationSpec:
        """The released moments' perturbation (Formulas.perturbed lists them, with their cell keys)."""
        policy = self.q.federation.policy
        targets = tuple(Target(name, kind, keys, s2) for name, (kind, keys, s2) in formulas.targets.items())
        return PerturbationSpec(policy.cell_key, perturbation_table(policy.cell_key, policy.min_cell_size), targets)

    def secure_joins(self) -> tuple[Join, ...]:
        """The joins between groups, as ((group, member alias), (group, member alias)) key pairs."""
        out = []
        for j in self.q.joins:
            group = self.group_of[j.relation]
            if j.relation in group.members[1:]:
                continue                                   # joined locally inside its group
            pairs = tuple(tuple((self.group_of[a].name, a) for a, _ in pair) for pair in j.pairs)
            out.append(Join(group.name, j.kind, pairs))
        return tuple(out)

    def cell_code(self, name: str) -> tuple[exp.Expression, int, int]:
        """The group's own cell code (mixed radix over its GROUP BY items), its size and absent code."""
        code, size, absent = None, 1, 0
        for g in self.grid.groups:
            if self.group_of[g.relation].name != name:
                continue
            values = [v for v in g.domain if v is not None]
            found = exp.func("list_position", exp.Array(expressions=[literal(v) for v in values]), g.expr.copy())
            pos = exp.Sub(this=found, expression=ONE)
            if None in g.domain[:-1]:
                # NULL before some values (WIDTH_BUCKET's domain starts with it): a value's code is its
                # index in the domain, one more than among the non-NULL values for those after NULL
                i = g.domain.index(None)
                pos = found if i == 0 else exp.Add(this=pos, expression=flag(exp.GT(this=found.copy(),
                                                                                   expression=literal(i))))
            if None in g.domain:
                pos = exp.Case(ifs=[exp.If(this=exp.Is(this=g.expr.copy(), expression=exp.null()),
                                           true=exp.Literal.number(g.domain.index(None)))], default=pos)
            # A value outside the (narrowed) domain belongs to no cell: a code below -1 everywhere, as a
            # BIGINT (times the other groups' widths it would overflow a party's INTEGER arithmetic).
            pos = exp.func("coalesce", pos, exp.cast(exp.Literal.number(-10**9), "BIGINT"))
            code = pos if code is None else exp.Add(
                this=exp.Mul(this=exp.paren(code), expression=exp.Literal.number(len(g.domain))), expression=pos)
            absent = absent * len(g.domain) + self.absent_index(g)
            size *= len(g.domain)
        return (exp.Literal.number(0) if code is None else code), size, absent

    def absent_index(self, g) -> int:
        if not self.group_of[g.relation].nullable:
            return 0
        nulled = g.expr.copy().transform(lambda n: exp.null() if isinstance(n, exp.Column) else n)
        value = scratch().execute(exp.select(nulled).sql("duckdb")).fetchall()[0][0]
        # A WHERE may have narrowed NULL out of the domain: then its flag drops the unmatched rows anyway.
        return g.domain.index(value) if value in g.domain else 0

    def per_key_sums(self, moments: dict[str, Moment]) -> dict:
        """Per group, the sums each moment needs of it; and each moment as a product of those sums."""
        out: dict = {name: {} for name in self.groups}
        rewritten = {}
        for m in moments.values():
            factors = []
            for name in self.groups:
                mine = [c for c in _factors(m.expr) if isinstance(c, exp.Column) and c.table == name]
                if m.kind in PERSON_SETS and not mine:
                    continue                               # "has a row" is the joined row itself
                agg = "MAX" if m.kind in PERSON_SETS else "SUM"
                product = times(*[exp.column(c.name, table="r") for c in mine])
                key = (agg, product.sql())
                sums = out[name]
                if key not in sums:
                    sums[key] = (f"s{len(sums)}", agg, product, self.sum_column(name, mine, agg, len(sums)))
                factors.append(exp.column(sums[key][0], table=name))
            rewritten[m.name] = times(*factors) if factors else ONE
        out["moments"] = rewritten
        return out

    def sum_column(self, name: str, factors: list[exp.Column], agg: str, i: int) -> LocalColumn:
        cols = [self.locals[name].exprs[c.name][0] for c in factors]
        absent = 1
        for c in cols:
            absent *= c.absent if c.kind == "flag" else 0
        if agg == "MAX":
            return LocalColumn(f"s{i}", "flag", 0, 1, absent)
        bound, scale = self.rows_per_key(name), 0
        for c in cols:
            bound *= c.bound
            scale += c.scale
        return LocalColumn(f"s{i}", "value", scale, bound, absent)

    def rows_per_key(self, name: str) -> int:
        """The most rows one key value may have in a group's local join: the product over its members."""
        out = 1
        for alias in self.groups[name].members:
            out *= self.q.relations[alias].rows_per_key
        return out

    def local_parts(self, name: str, mode: str, moments, keys: set[str], sums=None) -> list[LocalPart]:
        q = self.q
        group = self.groups[name]
        code, size, absent = self.cell_code(name)
        cols, items = [], []
        for alias in group.members:
            if alias in keys:
                # The key enters MPC as a 64-bit hash; a LEFT JOIN's missing key as NULL (no token).
                # Exact local mode only counts distinct persons at its owner: no hash needed (a
                # perturbed one needs it for the record keys).
                key = exp.column(q.relations[alias].key.name, table=alias)
                if mode != "local" or sums is not None:
                    key = exp.func("md5_number_lower", exp.cast(key, "VARCHAR"))
                cols.append(LocalColumn(f"key_{alias}", "key"))
                items.append(exp.alias_(key, f"key_{alias}"))
        cols.append(LocalColumn("cell", "cell", 0, size, absent))
        items.append(exp.alias_(code, "cell"))
        for name_, (col, node) in self.locals[name].exprs.items():
            if col.kind == "flag":
                value = exp.Case(ifs=[exp.If(this=node.copy(), true=ONE)], default=exp.Literal.number(0))
            else:
                scaled = exp.Mul(this=exp.paren(node.copy()), expression=exp.Literal.number(10 ** col.scale))
                value = exp.func("coalesce", exp.cast(exp.func("round", scaled), "HUGEINT"),
                                 exp.Literal.number(0))
            items.append(exp.alias_(value, name_))
            cols.append(col)
        parts = []
        first = q.relations[group.members[0]]
        for i, part in enumerate(first.parts):
            rows = exp.select(*items).from_(self.source(first, part))
            for j in group.joins:
                rel = q.relations[j.relation]
                on = exp.and_(*[exp.EQ(this=exp.column(a[1], table=a[0]), expression=exp.column(b[1], table=b[0]))
                                for a, b in j.pairs])
                rows = rows.join(self.source(rel, rel.parts[0]), on=on, join_type="LEFT" if j.kind == "left" else None)
            if self.pushed[name]:
                rows = rows.where(exp.and_(*[c.copy() for c in self.pushed[name]]))
            sql, part_cols = rows, tuple(cols)
            if mode == "local" and sums is None:
                sql, part_cols = self.pre_aggregate(rows, name, moments)
            elif sums is not None:
                sql, part_cols = self.per_key_aggregate(rows, cols, sums)
            parts.append(LocalPart(name, part.party, i, sql.sql("duckdb", pretty=True), part_cols, size))
        return parts

    def per_key_aggregate(self, rows: exp.Select, cols: list[LocalColumn], sums: dict) -> tuple[exp.Select, tuple]:
        """The group's rows summed per key and cell: one row per person and cell."""
        by = [exp.column(c.name, table="r") for c in cols if c.kind in ("key", "cell")]
        items = list(by)
        out = [c for c in cols if c.kind in ("key", "cell")]
        for colname, agg, product, col in sums.values():
            value = exp.Max(this=product) if agg == "MAX" else exp.Sum(this=exp.cast(product, "HUGEINT"))
            items.append(exp.alias_(value, colname))
            out.append(col)
        query = exp.select(*items).from_(rows.subquery("r")).group_by(*[b.copy() for b in by])
        return query, tuple(out)

    def source(self, rel: Relation, part: RelationPart) -> exp.Expression:
        table = exp.table_(part.table.name, db=part.party)
        if not rel.is_horizontal:
            return table.as_(rel.alias)
        sel = exp.select(*[exp.alias_(e.copy(), n) for n, e in part.columns]).from_(table)
        if part.where is not None:
            sel = sel.where(part.where.copy())
        return sel.subquery(rel.alias)

    def pre_aggregate(self, rows: exp.Select, alias: str, moments) -> tuple[exp.Select, tuple]:
        """Local mode: the owner sums each moment per cell itself; only cell totals enter MPC.

        Moments over persons (distinct persons, Σ of squared per-person totals) are summed per cell
        from one row per person and cell: one GROUP BY (cell, key) instead of a COUNT(DISTINCT)
        per moment, which DuckDB computes with a hash set each.
        """
        def local(node):
            return node.copy().transform(
                lambda n: exp.column(n.name, table="r") if isinstance(n, exp.Column) and n.table == alias else n)

        def total(node):
            return exp.Sum(this=exp.cast(local(node), "HUGEINT"))

        cols = [LocalColumn("cell", "cell")] + [LocalColumn(m.name, m.kind) for m in moments.values()]
        cell = exp.column("cell", table="r")
        if not any(m.kind in ("persons", "sum2") for m in moments.values()):
            items = [exp.alias_(exp.func("coalesce", total(m.expr), exp.Literal.number(0)), m.name)
                     for m in moments.values()]
            return exp.select(cell, *items).from_(rows.subquery("r")).where("r.cell >= 0").group_by(cell), tuple(cols)
        per_person, outer = [], []
        for m in moments.values():
            q = exp.column(m.name, table="q")
            if m.kind == "persons":          # 1 when any of the person's rows in the cell has expr = 1
                flag = ONE if isinstance(m.expr, exp.Literal) else exp.Case(
                    ifs=[exp.If(this=exp.EQ(this=local(m.expr), expression=ONE), true=ONE)],
                    default=exp.Literal.number(0))
                per_person.append(exp.alias_(exp.Max(this=flag), m.name))
                agg = exp.Sum(this=q)
            else:                            # sum: Σ of the totals; sum2: Σ of their squares
                per_person.append(exp.alias_(total(m.expr), m.name))
                agg = exp.Sum(this=exp.Mul(this=q, expression=q.copy()) if m.kind == "sum2" else q)
            outer.append(exp.alias_(exp.func("coalesce", agg, exp.Literal.number(0)), m.name))
        key = exp.column(f"key_{self.q.root.alias}", table="r")
        persons = (exp.select(cell, *per_person).from_(rows.subquery("r")).where("r.cell >= 0")
                   .group_by(cell, key))
        query = exp.select(exp.column("cell", table="q"), *outer).from_(persons.subquery("q")).group_by("q.cell")
        return query, tuple(cols)

    def leakage(self, mode, parts, outputs, having, perturbed=False) -> tuple[Leak, ...]:
        k = self.q.federation.policy.min_cell_size
        if mode == "join":
            sizes = Leak("input sizes", f"{len(parts)}", "the padded size of each local result: the next of 128, "
                         "160, 200, ... (×1.25) above its rows")
        elif perturbed:
            sizes = Leak("input sizes", f"{len(parts)}", "the padded size of each local result (one row per person "
                         "and cell, for the persons' record keys): the next of 128, 160, 200, ... (×1.25) above its rows")
        else:
            sizes = Leak("input sizes", f"{len(parts)}", "the size of each local result: the number of cells (public)")
        leaks = [sizes]
        if mode == "join":
            leaks.append(Leak("join tokens", "Σ keys × token bits",
                              "power-residue PRF digits of each shuffled key (padding included): which shuffled "
                              "rows share a key; the parties see the join's size and key multiplicity pattern, "
                              "which may rest on fewer than k persons (the analyst sees neither)"))
        leaks.append(Leak("cells passing the release rules", f"{self.grid.size}",
                          f"which cells meet every release rule: each value rests on at least k={k} persons"
                          + (", no value is dominated" if self.q.federation.policy.dominance else ""),
                          per_cell=1))
        lines = margin_lines(tuple(len(g.domain) for g in self.grid.groups))
        if lines:
            leaks.append(Leak("secondary suppression", f"≤ {len(lines)} per round, ≤ {self.grid.size} rounds",
                              "per grid line (the whole grid, each one-dimensional margin) with suppressed cells: "
                              "whether they hold fewer than k persons together, and then which released cell "
                              "of the line has the fewest persons (it is suppressed too)"))
        if having is not None:
            leaks.append(Leak("having", "1 × cells passing the release rules", "HAVING outcome of the released cells", per_cell=1))
        if outputs:
            per_cell = sum(opened_per_cell(o) for o in outputs)
            leaks.append(Leak("released values", f"{per_cell} × released cells",
                              "the result: each output of each released cell (ratios as num·r, den·r)",
                              per_cell=per_cell))
        return tuple(leaks)


def _factors(expr: exp.Expression) -> list[exp.Expression]:
    if isinstance(expr, exp.Mul):
        return _factors(expr.this) + _factors(expr.expression)
    return [] if expr == ONE else [expr]


def _is_product(expr: exp.Expression) -> bool:
    return all(isinstance(f, exp.Column) for f in _factors(expr))


def plan_query(q: BoundQuery) -> Plan:
    """The exact plan where the federation releases exactly or approved it; else the perturbed one."""
    exact = Planner(q).plan()
    policy = q.federation.policy
    if policy.perturbation == "none" or exact.digest in policy.approved_plans:
        return exact
    return Planner(q, perturb=True).plan()


def exact_digest(q: BoundQuery) -> str:
    """The hash of the query's exact plan: what ``approved_plans`` lists (``sqlmpc approve``)."""
    return Planner(q).plan().digest


def record_key_leak(mode: str) -> tuple[Leak, ...]:
    rows = "padded rows of the root relation" if mode == "join" else "padded rows of each local result"
    return (Leak("record keys", rows,
                 "power-residue PRF inputs masked by a random nonzero element: uniformly random "
                 "nonzero field elements (they tell nothing; the record keys stay secret)"),
            Leak("noise bit decompositions", "(perturbed moments + sums) × released cells",
                 "each released cell's cell keys and S2 plus a secret random mask k = 30 bits wider, for their "
                 "bits: statistically uniform values (they tell nothing; the noise stays secret)"),
            Leak("released values", "perturbed", "counts and sums of released cells carry cell-key noise "
                 "(docs/disclosure.md): the exact values are never opened"))
