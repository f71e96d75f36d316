"""Planning: split a bound query into local parts and a secure part.

Everything that touches one relation only is computed by its owner in DuckDB
(filters, CASE/binning, products like x*x, the group code of its own
dimensions); only what spans relations is left to MPC.  Aggregates become
*moments* (Σ over a cell of a row expression) and each output is a formula
over moments, evaluated per cell in MPC and released as an exact ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.plan.bind import BoundQuery, Join, Relation, RelationPart, _pos, conjuncts, is_aggregate
from sqlmpc.plan.cells import CellGrid, cell_grid
from sqlmpc.plan.plan import Guard, Leak, LocalColumn, LocalPart, Moment, Plan, opened_per_cell
from sqlmpc.plan.release import DominanceTest, contributor_conditions, extreme_values, has_measure, margin_lines
from sqlmpc.result import aggregate_items
from sqlmpc.sql.params import literal

BOOLEAN = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is,
           exp.In, exp.Between, exp.Like, exp.Boolean)
SECURE_OPS = (exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Paren, exp.EQ, exp.NEQ, exp.GT, exp.GTE,
              exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Literal, exp.Boolean)
ONE = exp.Literal.number(1)


def M(name: str) -> exp.Column:
    return exp.column(name, table="M")


@dataclass
class LocalGroup:
    """Relations one party joins alone (same party, key equality): one local result.

    A relation LEFT-joined *to* an earlier group from another party makes its
    group ``nullable``: its rows may be missing from a joined row.
    """

    name: str
    members: list[str]
    joins: list[Join] = field(default_factory=list)
    nullable: bool = False


class LocalColumns:
    """The local columns of one group, collected while the query is split."""

    def __init__(self, q: BoundQuery, group: LocalGroup):
        self.q = q
        self.group = group
        self.exprs: dict[str, tuple[LocalColumn, exp.Expression]] = {}
        self.by_sql: dict[str, LocalColumn] = {}

    def add(self, node: exp.Expression) -> exp.Column:
        key = node.sql()
        if key in self.by_sql:
            return self.ref(self.by_sql[key])
        if _is_boolean(node):
            col = LocalColumn(f"f{len(self.exprs)}", "flag", 0, 1, self.absent_flag(node))
        else:
            scale, bound = self.interval(node)
            col = LocalColumn(f"v{len(self.exprs)}", "value", scale, bound)
        self.exprs[col.name] = (col, node)
        self.by_sql[key] = col
        return self.ref(col)

    def ref(self, col: LocalColumn) -> exp.Column:
        out = exp.column(col.name, table=self.group.name)
        out.meta["scale"] = col.scale
        return out

    def absent_flag(self, node: exp.Expression) -> int:
        """The flag's value for a LEFT JOIN row without a match (all columns NULL)."""
        if not self.group.nullable:
            return 0
        nulled = node.copy().transform(lambda n: exp.null() if isinstance(n, exp.Column) else n)
        import duckdb
        value = duckdb.execute(exp.select(exp.func("coalesce", nulled, exp.false())).sql("duckdb")).fetchall()[0][0]
        return int(bool(value))

    def interval(self, node: exp.Expression) -> tuple[int, int]:
        """(decimal scale, bound on |round(value * 10**scale)|) by interval arithmetic on ranges."""
        lo, hi, scale = _interval(node, self.q)
        return scale, int(max(abs(lo), abs(hi)) * 10 ** scale) + 1


def _interval(node, q) -> tuple[float, float, int]:
    if isinstance(node, exp.Paren):
        return _interval(node.this, q)
    if isinstance(node, exp.Column):
        col = q.column_of(node)
        if col.range is not None:
            return col.range[0], col.range[1], col.scale
        nums = [v for v in (col.domain or ()) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums:
            return min(nums), max(nums), 0
        raise errors.NotSupportedError(f"{node.sql()} has no numeric range to compute with")
    if isinstance(node, exp.Literal) and not node.is_string:
        v = float(node.this)
        scale = len(node.this.split(".")[1]) if "." in node.this else 0
        return v, v, scale
    if isinstance(node, BOOLEAN):
        return 0, 1, 0
    if isinstance(node, exp.Neg):
        lo, hi, s = _interval(node.this, q)
        return -hi, -lo, s
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        a0, a1, sa = _interval(node.this, q)
        b0, b1, sb = _interval(node.expression, q)
        if isinstance(node, exp.Add):
            return a0 + b0, a1 + b1, max(sa, sb)
        if isinstance(node, exp.Sub):
            return a0 - b1, a1 - b0, max(sa, sb)
        products = [a0 * b0, a0 * b1, a1 * b0, a1 * b1]
        return min(products), max(products), sa + sb
    if isinstance(node, (exp.Case, exp.If, exp.Coalesce, exp.Greatest, exp.Least)):
        branches = [b for b in node.find_all(exp.Expression) if b.parent is node and not isinstance(b, BOOLEAN)]
        branches += [i.args["true"] for i in node.args.get("ifs", [])]
        vals = [_interval(b, q) for b in branches if not isinstance(b, (exp.If,)) and b is not None
                and not isinstance(b, exp.Null)]
        if not vals:
            return 0, 0, 0
        return min(v[0] for v in vals), max(v[1] for v in vals), max(v[2] for v in vals)
    if isinstance(node, (exp.Abs,)):
        lo, hi, s = _interval(node.this, q)
        return 0, max(abs(lo), abs(hi)), s
    if isinstance(node, exp.Div):
        a0, a1, sa = _interval(node.this, q)
        b0, b1, _ = _interval(node.expression, q)
        if b0 == b1 and b0 != 0:
            vals = [a0 / b0, a1 / b0]
            return min(vals), max(vals), max(sa, 6)
    if isinstance(node, exp.WidthBucket):
        return 0, int(node.args["num_buckets"].this) + 1, 0
    raise errors.NotSupportedError(
        f"cannot bound the values of {node.sql()}: use measures with declared ranges and + - * CASE")


def value_scale(node: exp.Expression, q) -> int:
    """The decimal scale at which ``node`` enters MPC as an integer."""
    return _interval(node, q)[2]


COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def _scale(node: exp.Expression) -> int:
    return node.meta.get("scale", 0) if node.meta else 0


def _rescale(node: exp.Expression, scale: int) -> exp.Expression:
    """``node`` times 10^(scale - its scale): the same number at a finer scale."""
    if _scale(node) == scale:
        return node
    out = exp.Mul(this=node, expression=exp.Literal.number(10 ** (scale - _scale(node))))
    out.meta["scale"] = scale
    return out


def _constant(node: exp.Expression) -> exp.Expression:
    """A constant as an integer literal with its decimal scale (TRUE/FALSE as 1/0)."""
    import decimal

    import duckdb
    value = duckdb.execute(exp.select(node.copy()).sql("duckdb")).fetchall()[0][0]
    if value is None:
        raise errors.NotSupportedError(f"NULL constant {node.sql()} in a condition across parties")
    if isinstance(value, bool):
        out, scale = exp.Literal.number(int(value)), 0
    else:
        number = decimal.Decimal(str(value)).normalize()
        scale = max(0, -number.as_tuple().exponent)
        out = exp.Literal.number(int(number.scaleb(scale)))
    out.meta["scale"] = scale
    return out


def _is_boolean(node: exp.Expression) -> bool:
    """A condition: it enters MPC as a 0/1 flag (a CASE counts when every branch is a condition)."""
    node = node.unnest()
    if isinstance(node, BOOLEAN) or _is_match_test(node):
        return True
    if isinstance(node, exp.Case):
        values = [i.args["true"] for i in node.args.get("ifs", [])] + [node.args.get("default")]
        return all(v is not None and _is_boolean(v) for v in values)
    return False


def _is_match_test(node):
    return isinstance(node, exp.Is) and isinstance(node.expression, exp.Null)


class Planner:
    def __init__(self, q: BoundQuery):
        self.q = q
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
            return _constant(node)
        if len(groups) == 1:
            return self.locals[next(iter(groups))].add(node.copy())
        if isinstance(node, exp.Paren):
            return self.localize(node.this)
        if is_flag(node):
            return self.localize(node.args["ifs"][0].this)
        if isinstance(node, exp.Between):
            return self.localize(exp.and_(exp.GTE(this=node.this.copy(), expression=node.args["low"].copy()),
                                          exp.LTE(this=node.this.copy(), expression=node.args["high"].copy())))
        if not isinstance(node, SECURE_OPS):
            raise errors.NotSupportedError(
                f"{node.sql('duckdb')} combines several parties' columns in a way sqlmpc cannot compute "
                "securely yet; use + - * comparisons AND OR NOT across parties")
        out = node.copy()
        children = {k: self.localize(c) for k, c in node.args.items() if isinstance(c, exp.Expression)}
        if isinstance(node, (exp.Add, exp.Sub) + COMPARISONS):
            target = max(_scale(c) for c in children.values())
            children = {k: _rescale(c, target) for k, c in children.items()}
        for k, c in children.items():
            out.set(k, c)
        if isinstance(node, exp.Mul):
            scale = sum(_scale(c) for c in children.values())
        elif isinstance(node, (exp.Add, exp.Sub, exp.Neg)):
            scale = max(_scale(c) for c in children.values())
        else:
            scale = 0                                         # comparisons and logic give 0/1 flags
        out.meta["scale"] = scale
        return out

    # -- the plan ----------------------------------------------------------

    def plan(self) -> Plan:
        q = self.q
        secure_where = []
        for cond in q.where:
            groups = self.groups_of(cond)
            if len(groups) == 1 and not self.groups[next(iter(groups))].nullable:
                self.pushed[next(iter(groups))].append(cond)
            else:
                secure_where.append(self.localize(cond))
        row_filter = exp.and_(*secure_where) if secure_where else None

        cell_relations = tuple(dict.fromkeys(self.group_of[g.relation].name for g in self.grid.groups))
        moments: dict[str, Moment] = {}
        formulas = Formulas(self, moments)
        outputs = tuple(_parenthesize(formulas.output(item)) for item in aggregate_items(q))
        having = _parenthesize(formulas.output(q.having)) if q.having is not None else None
        for item, formula in zip(aggregate_items(q), outputs):
            _check_releasable(formula, item, q)
        if having is not None:
            _check_releasable(having, q.having, q, root_only=False)
        base = Guard("contributors", (formulas.persons().name,))       # the cell's own persons, first
        guards = (base,) + tuple(g for g in formulas.guards.values() if g != base)

        # One relation whose parts cannot share persons: each owner pre-aggregates per cell.
        root = q.root
        single = len(self.groups) == 1 and (not root.is_horizontal or root.key.key_space is None)
        mode = "local" if single else "join"
        joins = self.secure_joins()
        keys = {a for j in joins for pair in j.pairs for _, a in pair} | {q.root.alias}
        # Per-key pre-aggregation: when every moment is a product of one factor per group and no
        # condition spans groups, Σ over joined rows = Σ over keys of Π_groups (Σ of the factor
        # over the group's rows of that key and cell).  Joins then become (nearly) 1:1.
        per_key = mode == "join" and row_filter is None and all(_is_product(m.expr) for m in moments.values())
        sums = self.per_key_sums(moments) if per_key else {}
        parts = tuple(p for name in self.groups
                      for p in self.local_parts(name, mode, moments, keys, sums.get(name)))
        if per_key:
            moments = {n: replace(m, expr=sums["moments"][n]) for n, m in moments.items()}
        # The secure side knows groups, not the aliases inside them.
        grid = CellGrid(tuple(replace(g, relation=self.group_of[g.relation].name) for g in self.grid.groups))
        return Plan(
            sql=q.sql, fingerprint=q.federation.fingerprint, mode=mode,
            relations=tuple(self.groups), joins=joins,
            nullable=tuple(n for n, g in self.groups.items() if g.nullable),
            parts=parts, row_filter=row_filter if mode == "join" else None, grid=grid,
            cell_relations=cell_relations, moments=tuple(moments.values()), outputs=outputs, having=having,
            min_cell_size=q.federation.policy.min_cell_size,
            leakage=self.leakage(mode, parts, outputs, having), per_key=per_key, guards=guards,
        )

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
            pos = exp.Sub(this=exp.func("list_position", exp.Array(expressions=[literal(v) for v in values]),
                                        g.expr.copy()), expression=ONE)
            if None in g.domain:
                pos = exp.Case(ifs=[exp.If(this=exp.Is(this=g.expr.copy(), expression=exp.null()),
                                           true=exp.Literal.number(g.domain.index(None)))], default=pos)
            # A value outside the (narrowed) domain belongs to no cell: code -1 everywhere.
            pos = exp.func("coalesce", pos, exp.Literal.number(-10**9))
            code = pos if code is None else exp.Add(
                this=exp.Mul(this=exp.paren(code), expression=exp.Literal.number(len(g.domain))), expression=pos)
            absent = absent * len(g.domain) + self.absent_index(g)
            size *= len(g.domain)
        return (exp.Literal.number(0) if code is None else code), size, absent

    def absent_index(self, g) -> int:
        if not self.group_of[g.relation].nullable:
            return 0
        import duckdb
        nulled = g.expr.copy().transform(lambda n: exp.null() if isinstance(n, exp.Column) else n)
        value = duckdb.execute(exp.select(nulled).sql("duckdb")).fetchall()[0][0]
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
                if m.kind == "persons" and not mine:
                    continue                               # "has a row" is the joined row itself
                agg = "MAX" if m.kind == "persons" else "SUM"
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
        bound, scale = ROWS_PER_KEY, 0
        for c in cols:
            bound *= c.bound
            scale += c.scale
        return LocalColumn(f"s{i}", "value", scale, bound, absent)

    def local_parts(self, name: str, mode: str, moments, keys: set[str], sums=None) -> list[LocalPart]:
        q = self.q
        group = self.groups[name]
        code, size, absent = self.cell_code(name)
        cols, items = [], []
        for alias in group.members:
            if alias in keys:
                # The key enters MPC as a 64-bit hash; a LEFT JOIN's missing key as NULL (no token).
                # In local mode it only counts distinct persons at its owner: no hash needed.
                key = exp.column(q.relations[alias].key.name, table=alias)
                if mode != "local":
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
            if mode == "local":
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
        """Local mode: the owner sums each moment per cell itself; only cell totals enter MPC."""
        def local(node):
            return node.copy().transform(
                lambda n: exp.column(n.name, table="r") if isinstance(n, exp.Column) and n.table == alias else n)
        items = [exp.column("cell", table="r")]
        cols = [LocalColumn("cell", "cell")]
        sum2 = []
        for m in moments.values():
            if m.kind == "persons":
                key = exp.column(f"key_{self.q.root.alias}", table="r")
                agg = exp.Count(this=exp.Distinct(expressions=[key]))
                if not (isinstance(m.expr, exp.Literal)):
                    agg = exp.Count(this=exp.Distinct(expressions=[exp.If(
                        this=exp.EQ(this=local(m.expr), expression=ONE), true=key)]))
            elif m.kind == "sum2":
                sum2.append(m)
                items.append(exp.alias_(exp.func("coalesce", exp.column(m.name, table="p"), exp.Literal.number(0)),
                                        m.name))
                cols.append(LocalColumn(m.name, m.kind))
                continue
            else:
                agg = exp.Sum(this=exp.cast(local(m.expr), "HUGEINT"))
            items.append(exp.alias_(exp.func("coalesce", agg, exp.Literal.number(0)), m.name))
            cols.append(LocalColumn(m.name, m.kind))
        query = exp.select(*items).from_(rows.subquery("r")).where("r.cell >= 0").group_by("r.cell")
        if sum2:
            # Σ over persons of the square of each person's total in the cell (for dominance).
            key = exp.column(f"key_{self.q.root.alias}", table="r")
            person = exp.select(exp.column("cell", table="r"), *[
                exp.alias_(exp.Sum(this=exp.cast(local(m.expr), "HUGEINT")), m.name) for m in sum2
            ]).from_(rows.subquery("r")).where("r.cell >= 0").group_by(exp.column("cell", table="r"), key)
            squares = exp.select("q.cell", *[
                exp.alias_(exp.Sum(this=exp.Mul(this=exp.column(m.name, table="q"),
                                                expression=exp.column(m.name, table="q"))), m.name)
                for m in sum2]).from_(person.subquery("q")).group_by("q.cell")
            query = query.join(squares.subquery("p"), on="p.cell = r.cell", join_type="LEFT")
            query.set("group", None)
            query = query.group_by("r.cell", *[exp.column(m.name, table="p") for m in sum2])
        return query, tuple(cols)

    def leakage(self, mode, parts, outputs, having) -> tuple[Leak, ...]:
        k = self.q.federation.policy.min_cell_size
        leaks = [Leak("input sizes", f"{len(parts)}",
                      "the padded size of each local result: the next of 128, 160, 200, ... (×1.25) above its "
                      "rows" if mode == "join" else "the size of each local result: the number of cells (public)")]
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


def flag(cond: exp.Expression) -> exp.Expression:
    """A condition as a 0/1 number (how a row flag multiplies into a sum)."""
    return exp.Case(ifs=[exp.If(this=cond, true=ONE)], default=exp.Literal.number(0))


def is_flag(node: exp.Expression) -> bool:
    return (isinstance(node, exp.Case) and len(node.args.get("ifs", [])) == 1
            and node.args["ifs"][0].args["true"] == ONE and node.args.get("default") == exp.Literal.number(0))


def times(*factors: exp.Expression) -> exp.Expression:
    factors = [f for f in factors if f is not ONE]
    if not factors:
        return ONE
    out = factors[0].copy()
    for f in factors[1:]:
        out = exp.Mul(this=out, expression=f.copy())
    return out


def minus(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Sub(this=a.copy(), expression=b.copy())


def over(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Div(this=a.copy(), expression=b.copy())


def if_undefined(formula: exp.Expression, guard: exp.Expression, value: str) -> exp.Expression:
    """``formula``, but ``value`` where it is undefined (zero denominator) while ``guard`` ≠ 0."""
    return exp.Anonymous(this="IF_UNDEFINED", expressions=[formula, guard.copy(), exp.Literal.string(value)])


def first_held(node: exp.Expression, q, weight: exp.Expression, moment) -> exp.Expression:
    """MIN/MAX of a dimension: FIRST_HELD((persons holding each value), (the values)), from the extreme end.

    The same counts are the extreme guard (sqlmpc.plan.release): the result rests on k persons.
    """
    values = extreme_values(node, q)
    held = [moment(times(weight, flag(exp.EQ(this=node.this.copy(), expression=literal(v)))), "persons")
            for v in values]
    return exp.Anonymous(this="FIRST_HELD", expressions=[exp.Tuple(expressions=held),
                                                         exp.Tuple(expressions=[literal(v) for v in values])])


class Formulas:
    """Aggregates → moments, and outputs → formulas over moments.

    Moments are built in the query's own terms (e.g. ``flag(c.year = 2024) *
    c.cost * c.cost``) and only then localised, so that whatever one party can
    compute — including the whole product — becomes one of its local columns.
    """

    def __init__(self, planner: Planner, moments: dict[str, Moment]):
        self.p = planner
        self.q = planner.q
        self.moments = moments
        self.guards: dict[tuple, Guard] = {}
        self.by_key: dict[tuple[str, str], str] = {}        # (kind, local SQL) -> moment name
        rule = self.q.federation.policy.dominance
        self.dominance = DominanceTest.of(rule) if rule is not None else None

    def moment(self, expr: exp.Expression, kind: str = "sum") -> exp.Column:
        local = self.p.localize(expr) if expr is not ONE else ONE
        key = (kind, local.sql())
        if key in self.by_key:
            return M(self.by_key[key])
        name = f"m{len(self.moments)}"
        self.moments[name] = Moment(name, local, kind)
        self.by_key[key] = name
        return M(name)

    def persons(self):
        return self.moment(ONE, "persons")

    def output(self, node: exp.Expression) -> exp.Expression:
        if is_aggregate(node) or isinstance(node, exp.Filter):
            return self.aggregate(node)
        if isinstance(node, exp.Column):
            raise errors.NotSupportedError(f"{node.sql()} cannot be mixed with aggregates in one output")
        out = node.copy()
        for key, child in node.args.items():
            if isinstance(child, exp.Expression):
                out.set(key, self.output(child))
        return out

    def presence(self, e: exp.Expression) -> exp.Expression:
        """1 where ``e`` is not NULL: NULL columns, or rows a LEFT JOIN did not match."""
        nullable = any(self.q.column_of(c).nullable or c.table in self.q.nullable_relations
                       for c in e.find_all(exp.Column))
        return flag(exp.Not(this=exp.Is(this=e.copy(), expression=exp.null()))) if nullable else ONE

    def guard(self, node: exp.Expression, weight: exp.Expression) -> None:
        """Register what the aggregate's value rests on (sqlmpc.plan.release): contributors and dominance."""
        for cond in contributor_conditions(node, self.q):
            tests = [flag(c) for c in conjuncts(cond) if c != exp.true()]
            m = self.moment(times(weight, *tests), "persons")
            self.guards.setdefault(("contributors", m.name), Guard("contributors", (m.name,)))
        if self.dominance is None or isinstance(node, (exp.Count, exp.Min, exp.Max)):
            return
        args = [a for a in (node.this, node.args.get("expression")) if isinstance(a, exp.Expression)]
        present = [self.presence(a) for a in args]
        for x in args:
            if has_measure(x, self.q):
                s1 = self.moment(times(weight, *present, x))
                s2 = self.moment(times(weight, *present, x), "sum2")
                self.guards.setdefault(("dominance", s1.name), Guard("dominance", (s1.name, s2.name),
                                                                      self.dominance.constant))

    def aggregate(self, node: exp.Expression) -> exp.Expression:
        weight = ONE
        if isinstance(node, exp.Filter):
            weight = flag(node.expression.this)
            node = node.this
        self.guard(node, weight)

        def total(*factors, scale: int = 0) -> exp.Expression:
            m = self.moment(times(weight, *factors))
            return over(m, exp.Literal.number(10 ** scale)) if scale else m

        if isinstance(node, exp.Count):
            if isinstance(node.this, exp.Star) or node.this is None:
                return total()
            if isinstance(node.this, exp.Distinct):
                col = node.this.expressions[0]
                present = self.presence(col) if col.table in self.q.nullable_relations else ONE
                return self.moment(times(weight, present), "persons")
            return total(self.presence(node.this))

        if isinstance(node, (exp.Min, exp.Max)):
            # The first value of the dimension (from the extreme end) that anyone in the cell holds,
            # released where at least k persons hold it: its per-value counts are the guard.
            formula = first_held(node, self.q, weight, self.moment)
            held = tuple(c.name for c in formula.expressions[0].expressions)
            self.guards.setdefault(("extreme", *held), Guard("extreme", held))
            return formula
        x = node.this
        px, sx = self.presence(x), _interval(x, self.q)[2]

        if isinstance(node, (exp.Sum, exp.Avg, exp.Stddev, exp.StddevSamp, exp.StddevPop,
                             exp.Variance, exp.VariancePop)):
            n = total(px)
            s = total(px, x, scale=sx)
            if isinstance(node, exp.Sum):
                # NULL when the cell has no non-NULL value: s * n / n is undefined exactly then.
                return over(times(s, n), n)
            if isinstance(node, exp.Avg):
                return over(s, n)
            ss = total(px, x, x, scale=2 * sx)
            num = minus(times(n, ss), times(s, s))
            samp = isinstance(node, (exp.Stddev, exp.StddevSamp, exp.Variance))
            var = over(num, times(n, minus(n, ONE) if samp else n))
            return exp.Sqrt(this=var) if isinstance(node, (exp.Stddev, exp.StddevSamp, exp.StddevPop)) else var

        # Two-argument aggregates f(y, x), over the rows where both are present.
        y, py, sy = x, px, sx
        x = node.expression
        px, sx = self.presence(x), _interval(x, self.q)[2]
        n = total(py, px)
        sum_x, sum_y = total(py, px, x, scale=sx), total(py, px, y, scale=sy)
        sxy = total(py, px, x, y, scale=sx + sy)
        sxx = total(py, px, x, x, scale=2 * sx)
        syy = total(py, px, y, y, scale=2 * sy)
        cov = minus(times(n, sxy), times(sum_x, sum_y))
        varx = minus(times(n, sxx), times(sum_x, sum_x))
        vary = minus(times(n, syy), times(sum_y, sum_y))
        if isinstance(node, exp.CovarPop):
            return over(cov, times(n, n))
        if isinstance(node, exp.CovarSamp):
            return over(cov, times(n, minus(n, ONE)))
        # Where the ratio is undefined DuckDB gives NaN (CORR, REGR_SLOPE on at least one row)
        # or 1 (REGR_R2 when only y is constant); if_undefined keeps those semantics.
        if isinstance(node, exp.RegrSlope):
            return if_undefined(over(cov, varx), n, "NaN")
        if isinstance(node, exp.RegrIntercept):
            return over(minus(times(sum_y, varx), times(cov, sum_x)), times(n, varx))
        if isinstance(node, exp.Corr):
            return if_undefined(over(cov, exp.Sqrt(this=times(varx, vary))), n, "NaN")
        if isinstance(node, exp.RegrR2):
            return if_undefined(over(times(cov, cov), times(varx, vary)), varx, "1")
        raise errors.NotSupportedError(f"aggregate {node.sql()} is not supported")


ROWS_PER_KEY = 2 ** 24   # declared bound on one person's rows in one table (sets bit lengths)


def _factors(expr: exp.Expression) -> list[exp.Expression]:
    if isinstance(expr, exp.Mul):
        return _factors(expr.this) + _factors(expr.expression)
    return [] if expr == ONE else [expr]


def _is_product(expr: exp.Expression) -> bool:
    return all(isinstance(f, exp.Column) for f in _factors(expr))


ROOT_ONLY = "the square root behind STDDEV, CORR and the like, or MIN/MAX"


def _check_releasable(formula: exp.Expression, item: exp.Expression, q, root_only: bool = True) -> None:
    """STDDEV/CORR (a square root) and MIN/MAX are released as they are: refuse arithmetic over them."""
    def special(node):
        return isinstance(node, exp.Sqrt) or (isinstance(node, exp.Anonymous) and node.name == "FIRST_HELD")
    top = formula.args["expressions"][0] if (isinstance(formula, exp.Anonymous)
                                             and formula.name == "IF_UNDEFINED") else formula
    allowed = set()
    if root_only:
        allowed.add(id(top))
        if isinstance(top, exp.Div) and isinstance(top.expression, exp.Sqrt):
            allowed.add(id(top.expression))               # CORR: cov / √(varx·vary)
    if any(special(n) and id(n) not in allowed for n in formula.walk()):
        raise errors.UnsupportedSqlError(
            f"{item.sql()}: sqlmpc releases {ROOT_ONLY} only as a column of its own"
            + ("" if root_only else ", not in HAVING"), sql=q.sql, **_pos(item),
            hint="select STDDEV_SAMP(x) (or CORR, MIN, MAX) by itself and compute with it afterwards")


def _parenthesize(tree: exp.Expression) -> exp.Expression:
    """Make the printed formula read as the tree computes (built trees carry no parentheses)."""
    for node in list(tree.find_all(exp.Binary)):
        for key in ("this", "expression"):
            child = node.args.get(key)
            if isinstance(child, exp.Binary) and not isinstance(child, exp.Column):
                node.set(key, exp.Paren(this=child))
    return tree


def local_groups(q: BoundQuery) -> dict[str, LocalGroup]:
    """Merge relations one party can join alone into local groups ("local first").

    A join merges into an earlier group when the joined table is a plain table
    at that group's one party and its ON clause links it to that group only.
    An inner join into a group that is itself LEFT-joined would change the
    outer join's meaning, so that one stays secure.
    """
    groups: dict[str, LocalGroup] = {}
    owner: dict[str, LocalGroup] = {}
    root = q.root
    groups[root.alias] = owner[root.alias] = LocalGroup(root.alias, [root.alias])
    for j in q.joins:
        rel = q.relations[j.relation]
        others = {a for pair in j.pairs for a, _ in pair} - {j.relation}
        target = {owner[a].name for a in others}
        group = groups[next(iter(target))] if len(target) == 1 else None
        if group is not None:
            party = {p for a in group.members for p in q.relations[a].parties}
            same = (not rel.is_horizontal and party == set(rel.parties)
                    and all(not q.relations[a].is_horizontal for a in group.members))
            if same and (not group.nullable or j.kind == "left"):
                group.members.append(j.relation)
                group.joins.append(j)
                owner[j.relation] = group
                continue
        groups[j.relation] = owner[j.relation] = LocalGroup(j.relation, [j.relation], nullable=j.kind == "left")
    return groups


def plan_query(q: BoundQuery) -> Plan:
    return Planner(q).plan()
