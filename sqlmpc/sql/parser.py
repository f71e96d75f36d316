"""Parse the sqlmpc dialect: lark grammar -> sqlglot expressions, with readable errors.

The grammar (grammar/sqlmpc.lark) decides what is accepted.  This module
builds, by hand, the same sqlglot tree that ``sqlglot.parse_one(sql,
read="duckdb")`` would build, so later layers can use sqlglot's tools; and it
turns every lark failure into a SqlSyntaxError / UnsupportedSqlError that
points at the offending token and says what is allowed instead.

Every node built from source text gets ``node.meta = {"line", "col", "start",
"end"}`` (1-based line/column, character offsets, end exclusive) so that later
layers can raise errors with a caret.
"""

from __future__ import annotations

import datetime
import re

from lark import Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError
from sqlglot import exp

from sqlmpc.errors import SqlSyntaxError, UnsupportedSqlError
from sqlmpc.sql import limits
from sqlmpc.sql.functions import AGGREGATES, DATE_PARTS, SCALARS, FunctionUseError
from sqlmpc.sql.grammar import lark_parser
from sqlmpc.sql.positions import error_at, line_col
from sqlmpc.sql.statements import Describe, Explain, Query, ShowPolicy, ShowTables, Statement
from sqlmpc.sql.syntax_errors import QUALIFIED_HINT, explain_parse_error

# ---------------------------------------------------------------- functions

AGGREGATE_NAMES = list(AGGREGATES)
SCALAR_NAMES = list(SCALARS)
FUNCTION_HINT = (f"aggregates: {', '.join(AGGREGATE_NAMES)} (optionally FILTER (WHERE ...)); "
                 f"functions: {', '.join(SCALAR_NAMES)}, EXTRACT(YEAR|MONTH|DAY FROM d)")

# CAST target types, as sqlglot's duckdb dialect names them.
CAST_TYPES = {
    "INTEGER": exp.DataType.Type.INT, "INT": exp.DataType.Type.INT,
    "BIGINT": exp.DataType.Type.BIGINT, "SMALLINT": exp.DataType.Type.SMALLINT,
    "DOUBLE": exp.DataType.Type.DOUBLE, "FLOAT": exp.DataType.Type.FLOAT, "REAL": exp.DataType.Type.FLOAT,
    "DECIMAL": exp.DataType.Type.DECIMAL, "NUMERIC": exp.DataType.Type.DECIMAL,
    "VARCHAR": exp.DataType.Type.TEXT, "TEXT": exp.DataType.Type.TEXT,
    "BOOLEAN": exp.DataType.Type.BOOLEAN, "BOOL": exp.DataType.Type.BOOLEAN,
    "DATE": exp.DataType.Type.DATE,
}

def parse(sql: str) -> Statement:
    """Parse one statement (a trailing ';' is allowed) of the sqlmpc dialect."""
    limits.check_text(sql)
    try:
        tree = lark_parser().parse(sql)
    except UnexpectedInput as err:
        raise explain_parse_error(sql, err) from None
    limits.check_tree(sql, tree)        # before the (recursive) transformer walks it
    try:
        return _ToSqlglot(sql).transform(tree)
    except VisitError as err:  # lark wraps what the transformer raises; unwrap it
        raise err.orig_exc from None


def parse_query(sql: str) -> exp.Expression:
    """Parse a SELECT and return its sqlglot tree."""
    statement = parse(sql)
    if not isinstance(statement, Query):
        raise SqlSyntaxError(f"expected a SELECT query, got {type(statement).__name__.upper()}",
                             sql=sql, line=1, column=1, hint="write SELECT ... FROM party.table ...")
    return statement.tree


# ---------------------------------------------------------------- positions


def _placed(node: exp.Expression, start: int, end: int, sql: str) -> exp.Expression:
    line, col = line_col(sql, start)
    node.meta.update(line=line, col=col, start=start, end=end)
    return node


# ---------------------------------------------------------------- tree -> sqlglot


def _binary(cls):
    """A transformer method for ``left <op> right`` (the operator token, if kept, sits between)."""
    def build(self, meta, children):
        return cls(this=children[0], expression=children[-1])
    return build


@v_args(meta=True)
class _ToSqlglot(Transformer):
    """Build the sqlglot tree that sqlglot's duckdb reader would build."""

    def __init__(self, sql: str):
        super().__init__()
        self.sql = sql
        self.aggregates = 0

    # Every rule's node is stamped with the span of its text.
    def _call_userfunc(self, tree, new_children=None):
        node = super()._call_userfunc(tree, new_children)
        if isinstance(node, exp.Expression) and not tree.meta.empty and "line" not in node.meta:
            _placed(node, tree.meta.start_pos, tree.meta.end_pos, self.sql)
        return node

    def _fail(self, cls, message, token_or_meta, hint=None):
        start = getattr(token_or_meta, "start_pos", 0)
        end = getattr(token_or_meta, "end_pos", start + 1)
        return error_at(cls, message, self.sql, start, end, hint)

    def _ident(self, token: Token) -> exp.Identifier:
        if token.type == "QUOTED_NAME":
            node = exp.Identifier(this=token.value[1:-1].replace('""', '"'), quoted=True)
        else:
            node = exp.Identifier(this=token.value, quoted=False)
        return _placed(node, token.start_pos, token.end_pos, self.sql)

    # ---- statements

    def start(self, meta, children):
        statement = children[0]
        return Query(statement, self.sql) if isinstance(statement, exp.Expression) else statement

    def explain(self, meta, children):
        word, select = children
        if word is not None and word.upper() != "ANALYZE":
            raise self._fail(SqlSyntaxError, f"unexpected '{word}' after EXPLAIN", word,
                             "write EXPLAIN SELECT ... or EXPLAIN ANALYZE SELECT ...")
        return Explain(Query(select, self.sql), analyze=word is not None)

    def show(self, meta, children):
        (word,) = children
        if word.upper() == "TABLES":
            return ShowTables()
        if word.upper() == "POLICY":
            return ShowPolicy()
        raise self._fail(UnsupportedSqlError, f"SHOW {word} is not supported", word,
                         "use SHOW TABLES or SHOW POLICY")

    def describe(self, meta, children):
        (table,) = children
        return Describe(party=table.args["db"].name, table=table.name)

    # ---- SELECT

    def select(self, meta, children):
        items, source, *clauses = children
        node = exp.Select(expressions=items)
        node.set("from_", exp.From(this=source))
        for clause in clauses:
            if isinstance(clause, exp.Join):
                node.append("joins", clause)
            elif isinstance(clause, tuple):  # LIMIT [OFFSET]
                node.set("limit", clause[0])
                if clause[1] is not None:
                    node.set("offset", clause[1])
            else:
                node.set(clause.key, clause)  # where, group, having, order
        return node

    def select_items(self, meta, children):
        limits.check_select_items(self.sql, children, meta)
        return children

    def select_item(self, meta, children):
        expr, alias = children
        return expr if alias is None else exp.Alias(this=expr, alias=alias)

    def alias(self, meta, children):
        return self._ident(children[0])

    def federated(self, meta, children):
        union, alias = children
        return exp.Subquery(this=union, alias=exp.TableAlias(this=alias))

    def union_all(self, meta, children):
        node = children[0]
        for select in children[1:]:
            node = exp.Union(this=node, expression=select, distinct=False)
        return node

    def simple_select(self, meta, children):
        items, table, *where = children
        node = exp.Select(expressions=items)
        node.set("from_", exp.From(this=table))
        if where:
            node.set("where", where[0])
        return node

    def table_ref(self, meta, children):
        table, alias = children
        if alias is not None:
            table.set("alias", exp.TableAlias(this=alias))
        return table

    def table_name(self, meta, children):
        first, second = children
        if second is None:
            raise self._fail(UnsupportedSqlError, f"table '{first}' must be qualified by its party", first,
                             QUALIFIED_HINT)
        return exp.Table(this=self._ident(second), db=self._ident(first))

    def join(self, meta, children):
        kind, table, condition = children
        return exp.Join(this=table, on=condition, **(kind or {}))

    def join_kind(self, meta, children):
        if children[0].type == "INNER":
            return {"kind": "INNER"}
        return {"side": "LEFT", **({"kind": "OUTER"} if children[1] is not None else {})}

    def where(self, meta, children):
        return exp.Where(this=children[0])

    def group_by(self, meta, children):
        return exp.Group(expressions=children)

    def having(self, meta, children):
        return exp.Having(this=children[0])

    def order_by(self, meta, children):
        return exp.Order(expressions=children)

    def ordered(self, meta, children):
        expr, direction, nulls = children
        desc = None if direction is None else direction.type == "DESC"
        if nulls is not None and nulls.upper() not in ("FIRST", "LAST"):
            raise self._fail(SqlSyntaxError, f"unexpected '{nulls}' after NULLS", nulls,
                             "write NULLS FIRST or NULLS LAST")
        # DuckDB sorts NULLs last unless told otherwise; sqlglot records that.
        return exp.Ordered(this=expr, desc=desc, nulls_first=nulls is not None and nulls.upper() == "FIRST")

    def limit(self, meta, children):
        count, offset = children
        return (exp.Limit(expression=self._number(count)),
                None if offset is None else exp.Offset(expression=self._number(offset)))

    # ---- expressions

    or_, and_ = _binary(exp.Or), _binary(exp.And)
    eq, neq, lt, lte, gt, gte = (_binary(c) for c in (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE))
    add, sub, mul, mod = (_binary(c) for c in (exp.Add, exp.Sub, exp.Mul, exp.Mod))

    def dpipe(self, meta, children):
        return exp.DPipe(this=children[0], expression=children[-1], safe=True)  # safe: as sqlglot's duckdb reader

    def div(self, meta, children):
        return exp.Div(this=children[0], expression=children[-1], typed=False, safe=False)

    def not_(self, meta, children):
        return exp.Not(this=children[-1])

    def neg(self, meta, children):
        return exp.Neg(this=children[0])

    def paren(self, meta, children):
        return exp.Paren(this=children[0])

    @staticmethod
    def _negated(negation, node):
        return node if negation is None else exp.Not(this=node)

    def between(self, meta, children):
        value, negation, low, high = children
        return self._negated(negation, exp.Between(this=value, low=low, high=high))

    def in_(self, meta, children):
        value, negation, *items = children
        limits.check_in_list(self.sql, items, meta)
        return self._negated(negation, exp.In(this=value, expressions=items))

    def like(self, meta, children):
        value, negation, pattern = children
        # sqlglot spells NOT LIKE as Like(negate=True), unlike NOT IN / NOT BETWEEN.
        return exp.Like(this=value, expression=pattern, **({"negate": True} if negation else {}))

    def is_null(self, meta, children):
        value, negation = children
        return self._negated(negation, exp.Is(this=value, expression=exp.Null()))

    def column(self, meta, children):
        first, second = children
        if second is None:
            return exp.Column(this=self._ident(first))
        return exp.Column(this=self._ident(second), table=self._ident(first))

    def _number(self, token):
        text = "0" + token.value if token.value.startswith(".") else token.value  # as sqlglot: .5 -> 0.5
        return _placed(exp.Literal(this=text, is_string=False), token.start_pos, token.end_pos, self.sql)

    def number(self, meta, children):
        return self._number(children[0])

    def string(self, meta, children):
        return exp.Literal.string(children[0].value[1:-1].replace("''", "'"))

    def true(self, meta, children):
        return exp.Boolean(this=True)

    def false(self, meta, children):
        return exp.Boolean(this=False)

    def null(self, meta, children):
        return exp.Null()

    def placeholder(self, meta, children):
        return exp.Placeholder()

    def typed_literal(self, meta, children):
        name, text = children
        if name.upper() != "DATE":
            raise self._fail(UnsupportedSqlError, f"typed literal {name} '...' is not supported", name,
                             "only DATE 'yyyy-mm-dd' literals are supported")
        try:
            datetime.date.fromisoformat(text.this)
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.this):
                raise ValueError
        except ValueError:
            raise self._fail(SqlSyntaxError, f"invalid date '{text.this}'", meta,
                             "write dates as DATE 'yyyy-mm-dd'") from None
        return exp.Cast(this=text, to=exp.DataType(this=exp.DataType.Type.DATE, nested=False))

    def case(self, meta, children):
        operand, *ifs, default = children
        node = exp.Case(ifs=ifs)
        if operand is not None:
            node.set("this", operand)
        if default is not None:
            node.set("default", default)
        return node

    def when(self, meta, children):
        return exp.If(this=children[0], true=children[1])

    def cast(self, meta, children):
        return exp.Cast(this=children[0], to=children[1])

    def type_name(self, meta, children):
        name, precision, scale = children
        kind = CAST_TYPES.get(name.upper())
        if kind is None:
            raise self._fail(UnsupportedSqlError, f"type {name} is not supported in CAST", name,
                             f"types: {', '.join(CAST_TYPES)}")
        params = [p for p in (precision, scale) if p is not None]
        if params and kind != exp.DataType.Type.DECIMAL:
            raise self._fail(SqlSyntaxError, f"type {name} takes no parameters", name, "write e.g. DECIMAL(10, 2)")
        if kind == exp.DataType.Type.DECIMAL and not params:
            params = ["18", "3"]  # DuckDB's default DECIMAL, as sqlglot spells it out
        node = exp.DataType(this=kind, nested=False)
        if params:
            node.set("expressions", [exp.DataTypeParam(this=exp.Literal.number(str(p))) for p in params])
        return node

    def extract(self, meta, children):
        part, value = children
        if part.upper() not in DATE_PARTS:
            raise self._fail(UnsupportedSqlError, f"EXTRACT({part} ...) is not supported", part,
                             f"date parts: {', '.join(DATE_PARTS)}")
        return exp.Extract(this=exp.Var(this=part.upper()), expression=value)

    def args(self, meta, children):
        return children

    def filter(self, meta, children):
        return exp.Where(this=children[0])

    def function(self, meta, children):
        name, args, filter_ = children
        return self._function(name, args or [], filter_)

    def function_star(self, meta, children):
        name, star, filter_ = children
        if name.upper() != "COUNT":
            raise self._fail(SqlSyntaxError, f"{name}(*) is not allowed; only COUNT(*) takes *", star,
                             f"write {name.upper()}(column)")
        star_node = _placed(exp.Star(), star.start_pos, star.end_pos, self.sql)
        return self._with_filter(name, exp.Count(this=star_node, big_int=True), filter_)

    def function_distinct(self, meta, children):
        name, value, filter_ = children
        if name.upper() != "COUNT":
            raise self._fail(UnsupportedSqlError, f"{name.upper()}(DISTINCT ...) is not supported", name,
                             "DISTINCT is only allowed in COUNT(DISTINCT column)")
        return self._with_filter(name, exp.Count(this=exp.Distinct(expressions=[value]), big_int=True), filter_)

    def _with_filter(self, name, node, filter_):
        self.aggregates += 1
        limits.check_aggregate_count(self.sql, self.aggregates, name.start_pos)
        if filter_ is None:
            return node
        close = self.sql.rfind(")", 0, filter_.meta["start"]) + 1  # the aggregate ends at its ')'
        _placed(node, name.start_pos, close, self.sql)
        return exp.Filter(this=node, expression=filter_)

    def _function(self, name: Token, args: list, filter_):
        upper = name.upper()
        aggregate = AGGREGATES.get(upper)
        function = SCALARS.get(upper)
        fewest, most = (aggregate.arity, aggregate.arity) if aggregate else function.arity if function else (0, None)
        if aggregate is None and function is None:
            raise self._fail(UnsupportedSqlError, f"unknown function {name}", name, FUNCTION_HINT)
        if len(args) < fewest or (most is not None and len(args) > most):
            if most is None:
                raise self._fail(SqlSyntaxError, f"{upper} needs at least one argument", name, f"e.g. {upper}(x, 0)")
            wanted = " or ".join(str(n) for n in range(fewest, most + 1))
            raise self._fail(SqlSyntaxError, f"{upper} takes {wanted} argument{'s' if (fewest, most) != (1, 1) else ''}, "
                             f"got {len(args)}", name, f"e.g. {upper}({', '.join(['x', 'y', 'lo', 'hi'][:fewest])})")
        if aggregate is not None:
            if upper == "COUNT":
                return self._with_filter(name, exp.Count(this=args[0], big_int=True), filter_)
            two = {"expression": args[1]} if aggregate.arity == 2 else {}
            return self._with_filter(name, aggregate.node(this=args[0], **two), filter_)
        if filter_ is not None:
            raise self._fail(SqlSyntaxError, f"FILTER applies only to aggregates, not to {upper}", name,
                             "write e.g. SUM(x) FILTER (WHERE ...)")
        try:
            return function.build(name.value, args)
        except FunctionUseError as err:
            raise self._fail(err.cls, err.message, name, err.hint) from None
