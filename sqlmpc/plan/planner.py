"""Planning: split a bound query into local parts and a secure part.

Everything that touches one relation only is computed by its owner in DuckDB
(filters, CASE/binning, products like x*x, the group code of its own
dimensions); only what spans relations is left to MPC.  Aggregates become
*moments* (Σ over a cell of a row expression) and each output is a formula
over moments, evaluated per cell in MPC and released as an exact ratio.
"""

from __future__ import annotations

from sqlglot import exp

from sqlmpc import errors
from sqlmpc.catalog import Role
from sqlmpc.plan.bind import AGGREGATES, BoundQuery, Relation, RelationPart, is_aggregate
from sqlmpc.plan.cells import CellGrid, _lit, cell_grid
from sqlmpc.plan.plan import Leak, LocalColumn, LocalPart, Moment, Plan
from sqlmpc.result import aggregate_items

BOOLEAN = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is,
           exp.In, exp.Between, exp.Like, exp.Boolean)
SECURE_OPS = (exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Paren, exp.EQ, exp.NEQ, exp.GT, exp.GTE,
              exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Literal, exp.Boolean)
ONE = exp.Literal.number(1)


def M(name: str) -> exp.Column:
    return exp.column(name, table="M")


class LocalColumns:
    """The local columns of one relation, collected while the query is split."""

    def __init__(self, q: BoundQuery, rel: Relation):
        self.q = q
        self.rel = rel
        self.exprs: dict[str, tuple[LocalColumn, exp.Expression]] = {}

    def add(self, node: exp.Expression) -> exp.Column:
        key = node.sql()
        for name, (_, e) in self.exprs.items():
            if e.sql() == key:
                return exp.column(name, table=self.rel.alias)
        if isinstance(node, BOOLEAN) or _is_match_test(node):
            col = LocalColumn(f"f{len(self.exprs)}", "flag", 0, 1, self.absent_flag(node))
        else:
            scale, bound = self.interval(node)
            col = LocalColumn(f"v{len(self.exprs)}", "value", scale, bound)
        self.exprs[col.name] = (col, node)
        return exp.column(col.name, table=self.rel.alias)

    def absent_flag(self, node: exp.Expression) -> int:
        """The flag's value for a LEFT JOIN row without a match (all columns NULL)."""
        if self.rel.alias not in self.q.nullable_relations:
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


def _is_match_test(node):
    return isinstance(node, exp.Is) and isinstance(node.expression, exp.Null)


class Planner:
    def __init__(self, q: BoundQuery):
        self.q = q
        self.grid: CellGrid = cell_grid(q)
        self.locals = {a: LocalColumns(q, r) for a, r in q.relations.items()}
        self.pushed: dict[str, list[exp.Expression]] = {a: [] for a in q.relations}

    # -- splitting expressions --------------------------------------------

    def localize(self, node: exp.Expression) -> exp.Expression:
        """Rewrite a row expression so that every single-relation subtree is a local column."""
        rels = self.q.relations_of(node)
        if not rels:
            return node.copy()
        if len(rels) == 1:
            return self.locals[next(iter(rels))].add(node.copy())
        if isinstance(node, exp.Paren):
            return self.localize(node.this)
        if isinstance(node, exp.Between):
            return self.localize(exp.and_(exp.GTE(this=node.this.copy(), expression=node.args["low"].copy()),
                                          exp.LTE(this=node.this.copy(), expression=node.args["high"].copy())))
        if not isinstance(node, SECURE_OPS):
            raise errors.NotSupportedError(
                f"{node.sql('duckdb')} combines several parties' columns in a way sqlmpc cannot compute "
                "securely yet; use + - * comparisons AND OR NOT across parties")
        out = node.copy()
        for key, child in node.args.items():
            if isinstance(child, exp.Expression):
                out.set(key, self.localize(child))
        return out

    # -- the plan ----------------------------------------------------------

    def plan(self) -> Plan:
        q = self.q
        secure_where = []
        for cond in q.where:
            rels = q.relations_of(cond)
            if len(rels) == 1 and next(iter(rels)) not in q.nullable_relations:
                self.pushed[next(iter(rels))].append(cond)
            else:
                secure_where.append(self.localize(cond))
        row_filter = exp.and_(*secure_where) if secure_where else None

        cell_relations = tuple(dict.fromkeys(g.relation for g in self.grid.groups))
        moments: dict[str, Moment] = {}
        formulas = Formulas(self, moments)
        outputs = tuple(_parenthesize(formulas.output(item)) for item in aggregate_items(q))
        having = _parenthesize(formulas.output(q.having)) if q.having is not None else None
        formulas.persons()

        # One relation whose parts cannot share persons: each owner pre-aggregates per cell.
        root = q.root
        single = len(q.relations) == 1 and (not root.is_horizontal or root.key.key_space is None)
        mode = "local" if single else "join"
        if mode == "join" and any(m.kind in ("min", "max") for m in moments.values()):
            raise errors.NotSupportedError(
                "MIN and MAX are supported on queries over one table (or a UNION ALL) only")
        parts = tuple(p for alias in q.relations for p in self.local_parts(alias, mode, moments))
        return Plan(
            sql=q.sql, fingerprint=q.federation.fingerprint, mode=mode,
            relations=tuple(q.relations), joins=tuple(q.joins), nullable=tuple(sorted(q.nullable_relations)),
            parts=parts, row_filter=row_filter if mode == "join" else None, grid=self.grid,
            cell_relations=cell_relations, moments=tuple(moments.values()), outputs=outputs, having=having,
            min_cell_size=q.federation.policy.min_cell_size,
            leakage=self.leakage(mode, parts, outputs, having),
        )

    def cell_code(self, alias: str) -> tuple[exp.Expression, int, int]:
        """The relation's own group code (mixed radix over its groups), its size and absent code."""
        code, size, absent = exp.Literal.number(0), 1, 0
        for g in self.grid.groups:
            if g.relation != alias:
                continue
            values = [v for v in g.domain if v is not None]
            pos = exp.Sub(this=exp.func("list_position", exp.Array(expressions=[_lit(v) for v in values]),
                                        g.expr.copy()), expression=ONE)
            if None in g.domain:
                pos = exp.Case(ifs=[exp.If(this=exp.Is(this=g.expr.copy(), expression=exp.null()),
                                           true=exp.Literal.number(g.domain.index(None)))], default=pos)
            # A value outside the (narrowed) domain belongs to no cell: code -1 everywhere.
            code = exp.Add(this=exp.Mul(this=exp.paren(code), expression=exp.Literal.number(len(g.domain))),
                           expression=exp.func("coalesce", pos, exp.Literal.number(-10**9)))
            absent = absent * len(g.domain) + self.absent_index(g)
            size *= len(g.domain)
        return code, size, absent

    def absent_index(self, g) -> int:
        if g.relation not in self.q.nullable_relations:
            return 0
        import duckdb
        nulled = g.expr.copy().transform(lambda n: exp.null() if isinstance(n, exp.Column) else n)
        value = duckdb.execute(exp.select(nulled).sql("duckdb")).fetchall()[0][0]
        return g.domain.index(value)

    def local_parts(self, alias: str, mode: str, moments) -> list[LocalPart]:
        q = self.q
        rel = q.relations[alias]
        code, size, absent = self.cell_code(alias)
        cols = [LocalColumn("key", "key"), LocalColumn("cell", "cell", 0, size, absent)]
        items = [exp.alias_(exp.func("md5_number_lower", exp.cast(
                     exp.column(rel.key.name, table=alias), "VARCHAR")), "key"),
                 exp.alias_(code, "cell")]
        for name, (col, node) in self.locals[alias].exprs.items():
            if col.kind == "flag":
                value = exp.Case(ifs=[exp.If(this=node.copy(), true=ONE)], default=exp.Literal.number(0))
            else:
                scaled = exp.Mul(this=exp.paren(node.copy()), expression=exp.Literal.number(10 ** col.scale))
                value = exp.func("coalesce", exp.cast(exp.func("round", scaled), "HUGEINT"),
                                 exp.Literal.number(0))
            items.append(exp.alias_(value, name))
            cols.append(col)
        parts = []
        for i, part in enumerate(rel.parts):
            rows = exp.select(*items).from_(self.source(rel, part))
            if self.pushed[alias]:
                rows = rows.where(exp.and_(*[c.copy() for c in self.pushed[alias]]))
            sql, part_cols = rows, tuple(cols)
            if mode == "local":
                sql, part_cols = self.pre_aggregate(rows, alias, moments)
            parts.append(LocalPart(alias, part.party, i, sql.sql("duckdb", pretty=True), part_cols, size))
        return parts

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
        for m in moments.values():
            if m.kind == "persons":
                agg = exp.Count(this=exp.Distinct(expressions=[exp.column("key", table="r")]))
                if not (isinstance(m.expr, exp.Literal)):
                    agg = exp.Count(this=exp.Distinct(expressions=[exp.If(
                        this=exp.EQ(this=local(m.expr), expression=ONE), true=exp.column("key", table="r"))]))
            elif m.kind in ("min", "max"):
                agg = exp.Min(this=local(m.expr)) if m.kind == "min" else exp.Max(this=local(m.expr))
            else:
                agg = exp.Sum(this=exp.cast(local(m.expr), "HUGEINT"))
            items.append(exp.alias_(exp.func("coalesce", agg, exp.Literal.number(0)), m.name))
            cols.append(LocalColumn(m.name, m.kind))
        query = exp.select(*items).from_(rows.subquery("r")).where("r.cell >= 0").group_by("r.cell")
        return query, tuple(cols)

    def leakage(self, mode, parts, outputs, having) -> tuple[Leak, ...]:
        leaks = []
        if mode == "join":
            leaks.append(Leak("join tokens", "Σ rows × token bits",
                              "Legendre-PRF bits of each shuffled key: reveal which shuffled rows share a key "
                              "(input sizes after local filters, join size, key multiplicity pattern)"))
        leaks.append(Leak("cells passing k", f"{self.grid.size}",
                          f"which cells describe at least k={self.q.federation.policy.min_cell_size} persons"))
        if having is not None:
            leaks.append(Leak("having", "cells passing k", "HAVING outcome of the released cells"))
        if outputs:
            leaks.append(Leak("released values", f"{len(outputs)} × released cells",
                              "the result: each output of each released cell (as an exact ratio)"))
        return tuple(leaks)


class Formulas:
    """Aggregates → moments, and outputs → formulas over moments."""

    def __init__(self, planner: Planner, moments: dict[str, Moment]):
        self.p = planner
        self.q = planner.q
        self.moments = moments

    def moment(self, expr: exp.Expression, kind: str = "sum") -> exp.Column:
        key = (kind, expr.sql())
        for m in self.moments.values():
            if (m.kind, m.expr.sql()) == key:
                return M(m.name)
        name = f"m{len(self.moments)}"
        self.moments[name] = Moment(name, expr, kind)
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

    def aggregate(self, node: exp.Expression) -> exp.Expression:
        flt = None
        if isinstance(node, exp.Filter):
            flt = node.expression.this
            node = node.this
        weight = self.p.localize(flt) if flt is not None else None

        def w(e: exp.Expression) -> exp.Expression:
            return e if weight is None else (weight.copy() if e is ONE else exp.Mul(this=weight.copy(), expression=e))

        def sum_of(e):
            return self.moment(w(e))

        def arg(e) -> tuple[exp.Expression, exp.Expression, int]:
            """(value expr, presence expr, scale) of an aggregate argument."""
            local = self.p.localize(e)
            scale = self.scale(local)
            return local, self.presence(e), scale

        if isinstance(node, exp.Count):
            if isinstance(node.this, exp.Star) or node.this is None:
                return sum_of(ONE)
            if isinstance(node.this, exp.Distinct):
                col = node.this.expressions[0]
                if col.table in self.q.nullable_relations:
                    matched = self.p.localize(exp.Not(this=exp.Is(this=col.copy(), expression=exp.null())))
                    return self.moment(w(matched), "persons")
                return self.moment(w(ONE), "persons")
            return sum_of(self.presence(node.this))

        if isinstance(node, (exp.Min, exp.Max)):
            value, present, scale = arg(node.this)
            kind = "min" if isinstance(node, exp.Min) else "max"
            m = self.moment(value, kind)
            return exp.Div(this=m, expression=exp.Literal.number(10 ** scale)) if scale else m

        x, px, sx = arg(node.this)
        if isinstance(node, (exp.Sum, exp.Avg, exp.Stddev, exp.StddevSamp, exp.StddevPop,
                             exp.Variance, exp.VariancePop)):
            n = sum_of(px)
            s = exp.Div(this=sum_of(x), expression=exp.Literal.number(10 ** sx))
            if isinstance(node, exp.Sum):
                # NULL when the cell has no non-NULL value: s * n / n is undefined exactly then.
                return exp.Div(this=exp.Mul(this=s, expression=n.copy()), expression=n.copy())
            if isinstance(node, exp.Avg):
                return exp.Div(this=s, expression=n)
            ss = exp.Div(this=sum_of(exp.Mul(this=x.copy(), expression=x.copy())),
                         expression=exp.Literal.number(10 ** (2 * sx)))
            num = exp.Sub(this=exp.Mul(this=n.copy(), expression=ss), expression=exp.Mul(this=s.copy(), expression=s.copy()))
            samp = isinstance(node, (exp.Stddev, exp.StddevSamp, exp.Variance))
            den = exp.Mul(this=n.copy(), expression=exp.Sub(this=n.copy(), expression=ONE) if samp else n.copy())
            var = exp.Div(this=num, expression=den)
            return exp.Sqrt(this=var) if isinstance(node, (exp.Stddev, exp.StddevSamp, exp.StddevPop)) else var

        # Two-argument aggregates: f(y, x) over rows where both are present.
        y, py, sy = x, px, sx
        x, px, sx = arg(node.expression)
        both = exp.Mul(this=py.copy(), expression=px.copy()) if not (py is ONE and px is ONE) else ONE
        both = py if px is ONE else (px if py is ONE else both)

        def S(e, scale):
            e = e if both is ONE else exp.Mul(this=both.copy(), expression=e)
            return exp.Div(this=sum_of(e), expression=exp.Literal.number(10 ** scale))
        n = sum_of(both)
        sx_, sy_ = S(x.copy(), sx), S(y.copy(), sy)
        sxy = S(exp.Mul(this=x.copy(), expression=y.copy()), sx + sy)
        sxx = S(exp.Mul(this=x.copy(), expression=x.copy()), 2 * sx)
        syy = S(exp.Mul(this=y.copy(), expression=y.copy()), 2 * sy)

        def minus(a, b):
            return exp.Sub(this=a, expression=b)

        def times(a, b):
            return exp.Mul(this=a.copy(), expression=b.copy())
        cov = minus(times(n, sxy), times(sx_, sy_))
        varx = minus(times(n, sxx), times(sx_, sx_))
        vary = minus(times(n, syy), times(sy_, sy_))
        if isinstance(node, exp.CovarPop):
            return exp.Div(this=cov, expression=times(n, n))
        if isinstance(node, exp.CovarSamp):
            return exp.Div(this=cov, expression=times(n, minus(n.copy(), ONE)))
        if isinstance(node, exp.RegrSlope):
            return exp.Div(this=cov, expression=varx)
        if isinstance(node, exp.RegrIntercept):
            return exp.Div(this=minus(times(sy_, varx), times(cov, sx_)), expression=times(n, varx))
        if isinstance(node, exp.Corr):
            return exp.Div(this=cov, expression=exp.Sqrt(this=times(varx, vary)))
        if isinstance(node, exp.RegrR2):
            return exp.Div(this=times(cov, cov), expression=times(varx, vary))
        raise errors.NotSupportedError(f"aggregate {node.sql()} is not supported")

    def presence(self, e: exp.Expression) -> exp.Expression:
        """1 where ``e`` is not NULL: NULL columns, or rows a LEFT JOIN did not match."""
        nullable = any(self.q.column_of(c).nullable or c.table in self.q.nullable_relations
                       for c in e.find_all(exp.Column))
        if not nullable:
            return ONE
        return self.p.localize(exp.Not(this=exp.Is(this=e.copy(), expression=exp.null())))

    def scale(self, local: exp.Expression) -> int:
        """Decimal scale of a (localised) expression's integer representation."""
        if isinstance(local, exp.Column):
            lc = self.p.locals[local.table].exprs[local.name][0]
            return lc.scale
        if isinstance(local, exp.Literal):
            return 0
        if isinstance(local, exp.Mul):
            return self.scale(local.this) + self.scale(local.expression)
        if isinstance(local, (exp.Add, exp.Sub)):
            a, b = self.scale(local.this), self.scale(local.expression)
            if a != b:
                raise errors.NotSupportedError(
                    f"{local.sql()}: adding values of different decimal scales across parties")
            return a
        if isinstance(local, (exp.Neg, exp.Paren)):
            return self.scale(local.this)
        return 0


def _parenthesize(tree: exp.Expression) -> exp.Expression:
    """Make the printed formula read as the tree computes (built trees carry no parentheses)."""
    for node in list(tree.find_all(exp.Binary)):
        for key in ("this", "expression"):
            child = node.args.get(key)
            if isinstance(child, exp.Binary) and not isinstance(child, exp.Column):
                node.set(key, exp.Paren(this=child))
    return tree


def plan_query(q: BoundQuery) -> Plan:
    return Planner(q).plan()
