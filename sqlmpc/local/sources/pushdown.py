"""A local part's DuckDB SQL in another engine's dialect (PostgreSQL, Spark), meaning the same.

The planner writes every local part in DuckDB's dialect; a party whose tables live
in PostgreSQL or Spark runs that SQL there.  sqlglot transpiles it; this module
first rewrites the few constructs whose meaning differs between engines, so that
every engine returns the same numbers:

* ``md5_number_lower(s)`` (the 64-bit key hash): bytes 8-15 of MD5(s), read
  little-endian.  Other engines build it from the hexadecimal MD5, bytes reversed
  (the same 64 bits, as a signed BIGINT; ``normalize`` reads it back unsigned).
* ``list_position([...], x)`` (a cell code): a CASE over the public domain, NULL
  when the value is outside it (Spark's ``array_position`` answers 0).
* ``round(x)``: DuckDB rounds halves away from zero, PostgreSQL's ``round(double)``
  to even; PostgreSQL gets ``sign(x) * floor(abs(x) + 0.5)``.

A construct the engine cannot express is refused (``NotSupportedError`` naming
it and the engine) when the party admits the plan, before anything runs.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from sqlmpc.catalog import Table
from sqlmpc.errors import NotSupportedError

ENGINE_NAMES = {"postgresql": "PostgreSQL", "spark": "Spark"}
DIALECTS = {"postgresql": "postgres", "spark": "spark"}
# Plain calls (unknown to sqlglot) that this module writes itself; any other is refused.
_PASSED_THROUGH = {"postgresql": {"reverse", "regexp_replace"}, "spark": {"conv"}}
# Functions whose meaning sqlglot carries over to PostgreSQL and Spark alike; any other is refused.
_PORTABLE = {getattr(exp, name) for name in (
    "Sum", "Count", "Max", "Min", "Avg", "Coalesce", "Cast", "Case", "If", "Abs", "Floor", "Ceil", "Sign",
    "Round", "MD5", "Substring", "Concat", "Lower", "Upper", "Length", "Extract", "Year", "Month", "Day",
    "Greatest", "Least", "Nullif", "IsNan", "Sqrt", "Trim", "Ln", "Exp", "Pow") if hasattr(exp, name)}


def _md5_lower_hex(text: exp.Expression) -> exp.Expression:
    """Hex digits of MD5 bytes 15, 14, ..., 8: the little-endian 64-bit number, big-endian in hex."""
    digest = exp.func("md5", text)
    pairs = [exp.Substring(this=digest.copy(), start=exp.Literal.number(31 - 2 * i), length=exp.Literal.number(2))
             for i in range(8)]
    return exp.Concat(expressions=pairs, safe=True)


def _key_hash(text: exp.Expression, engine: str) -> exp.Expression:
    if engine == "postgresql":
        # The MD5 once (PostgreSQL does not share repeated calls): its hex digits 17-32, reversed
        # (which reverses the nibbles too), then each pair swapped back: the bytes in reverse.
        reversed_ = exp.Anonymous(this="reverse", expressions=[exp.Substring(
            this=exp.func("md5", text), start=exp.Literal.number(17), length=exp.Literal.number(16))])
        hexed = exp.Anonymous(this="regexp_replace", expressions=[
            reversed_, exp.Literal.string("(.)(.)"), exp.Literal.string("\\2\\1"), exp.Literal.string("g")])
        bits = exp.Cast(this=exp.DPipe(this=exp.Literal.string("x"), expression=hexed),
                        to=exp.DataType.build("BIT(64)", dialect="postgres"))
        return exp.cast(bits, "BIGINT")
    # Spark: conv to base -10 reads the 64 bits as a signed number.
    hexed = _md5_lower_hex(text)
    return exp.cast(exp.func("conv", hexed, exp.Literal.number(16), exp.Literal.number(-10)), "BIGINT")


def _position(call: exp.Expression) -> exp.Expression:
    array, value = call.expressions
    if not isinstance(array, exp.Array):
        raise NotSupportedError(f"list_position over {array.sql('duckdb')} (not a list of constants)")
    ifs = [exp.If(this=exp.EQ(this=value.copy(), expression=v.copy()), true=exp.Literal.number(i + 1))
           for i, v in enumerate(array.expressions)]
    return exp.Case(ifs=ifs)


def _round(node: exp.Round, engine: str) -> exp.Expression:
    if engine != "postgresql" or node.args.get("decimals") is not None:
        return node
    x = node.this
    half_up = exp.func("floor", exp.Add(this=exp.func("abs", x.copy()), expression=exp.Literal.number(0.5)))
    return exp.Mul(this=exp.func("sign", x.copy()), expression=half_up)


def _portable(node: exp.Expression, engine: str) -> exp.Expression:
    if isinstance(node, exp.Anonymous) and node.name.upper() == "MD5_NUMBER_LOWER":
        return _key_hash(node.expressions[0], engine)
    if isinstance(node, exp.Anonymous) and node.name.upper() == "LIST_POSITION":
        return _position(node)
    if isinstance(node, exp.Round):
        return _round(node, engine)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "isnan":
        node = exp.IsNan(this=node.expressions[0])
    if isinstance(node, exp.IsNan) and engine == "postgresql":
        return exp.EQ(this=node.this, expression=exp.cast(exp.Literal.string("NaN"), "DOUBLE"))
    if isinstance(node, exp.DataType) and node.this in (exp.DataType.Type.INT128, exp.DataType.Type.UINT128):
        return exp.DataType.build("DECIMAL(38, 0)")
    return node


def table_relation(table: Table, found: dict[str, str], engine: str) -> exp.Expression:
    """The engine's table read as the party's DuckDB view reads a file: catalog columns, catalog types."""
    source = sqlglot.parse_one(table.source_table, into=exp.Table, read=DIALECTS[engine])
    return exp.select(*(
        exp.cast(exp.column(exp.to_identifier(found[c.name.lower()], quoted=True)), c.type)
        .as_(exp.to_identifier(c.name.lower())) for c in table.columns)).from_(source)


def transpile(sql: str, engine: str, relations: dict[tuple[str, str], exp.Expression]) -> str:
    """``sql`` (DuckDB) in the engine's dialect, each ``party.table`` replaced by its relation."""
    name = ENGINE_NAMES[engine]
    tree = sqlglot.parse_one(sql, read="duckdb")

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and (node.db.lower(), node.name.lower()) in relations:
            alias = node.alias or node.name
            return relations[(node.db.lower(), node.name.lower())].copy().subquery(alias)
        return _portable(node, engine)

    try:
        tree = tree.transform(swap)
    except NotSupportedError as exc:
        raise NotSupportedError(f"{exc} cannot be pushed down to {name}") from None
    for call in tree.find_all(exp.Func):
        known = type(call) in _PORTABLE or isinstance(call, (exp.Connector, exp.Binary))   # AND, OR, +, ...
        if not known and not (isinstance(call, exp.Anonymous) and call.name.lower() in _PASSED_THROUGH[engine]):
            function = call.name if isinstance(call, exp.Anonymous) else call.sql("duckdb").split("(")[0]
            raise NotSupportedError(f"the function {function.lower()}() of this query cannot be pushed down to "
                                    f"{name}: sqlmpc does not know that it means the same there; compute it "
                                    "differently or keep the table in a file")
    try:
        return tree.sql(dialect=DIALECTS[engine], unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise NotSupportedError(f"this query cannot be pushed down to {name}: {exc}") from None


def normalize(batch: pa.RecordBatch, names: list[str], keys: set[str]) -> pa.RecordBatch:
    """A batch from the engine as the party's DuckDB would give it: DuckDB's column names, keys as
    unsigned 64-bit hashes, PostgreSQL's NUMERIC (text in Arrow) as 38-digit decimals."""
    columns = []
    for name, column in zip(names, batch.columns):
        if isinstance(column.type, pa.ExtensionType):
            numeric = getattr(column.type, "type_name", "") == "numeric"
            column = column.storage
            if numeric:
                column = pc.cast(column, pa.decimal128(38, 0))
        if name in keys and pa.types.is_signed_integer(column.type):
            column = pc.cast(column, pa.uint64(), safe=False)      # the same 64 bits, read unsigned
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=names)
