"""Arrow types as PostgreSQL type OIDs, and values in PostgreSQL's text format."""

from __future__ import annotations

import datetime
import decimal
import math
import struct

import pyarrow as pa

BOOL, INT8, INT2, INT4, TEXT, FLOAT4, FLOAT8, DATE, TIMESTAMP, NUMERIC = 16, 20, 21, 23, 25, 700, 701, 1082, 1114, 1700
INTERVAL, TIMESTAMPTZ, TIME = 1186, 1184, 1083

_SIZES = {BOOL: 1, INT8: 8, INT2: 2, INT4: 4, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIMESTAMP: 8, TIMESTAMPTZ: 8, TIME: 8}


def type_oid(t: pa.DataType) -> int:
    """The PostgreSQL type a client should see for an Arrow column type."""
    if pa.types.is_boolean(t):
        return BOOL
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return INT2
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return INT4
    if pa.types.is_integer(t):
        return INT8
    if pa.types.is_float32(t) or pa.types.is_float16(t):
        return FLOAT4
    if pa.types.is_floating(t):
        return FLOAT8
    if pa.types.is_decimal(t):
        return NUMERIC
    if pa.types.is_date(t):
        return DATE
    if pa.types.is_timestamp(t):
        return TIMESTAMPTZ if t.tz else TIMESTAMP
    if pa.types.is_time(t):
        return TIME
    if pa.types.is_duration(t):
        return INTERVAL
    return TEXT


def type_size(oid: int) -> int:
    return _SIZES.get(oid, -1)


def to_text(value) -> bytes | None:
    """A Python value (from Arrow) in PostgreSQL's text format; None is NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, float):
        if math.isnan(value):
            return b"NaN"
        if math.isinf(value):
            return b"Infinity" if value > 0 else b"-Infinity"
        return repr(value).encode()
    if isinstance(value, decimal.Decimal):
        return format(value, "f").encode()
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ").encode()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat().encode()
    if isinstance(value, (list, tuple)):
        return ("{" + ",".join("NULL" if v is None else str(v) for v in value) + "}").encode()
    return str(value).encode()


def from_text(data: bytes | None, oid: int):
    """A bound parameter (text format) as the Python value the DB-API binds."""
    if data is None:
        return None
    text = data.decode()
    if oid in (INT2, INT4, INT8):
        return int(text)
    if oid in (FLOAT4, FLOAT8, NUMERIC):
        return float(text)
    if oid == BOOL:
        return text.lower() in ("t", "true", "1", "on", "yes")
    if oid == DATE:
        return datetime.date.fromisoformat(text)
    return text


def from_binary(data: bytes | None, oid: int):
    """A bound parameter in binary format (ints, floats, bools, text)."""
    if data is None:
        return None
    formats = {INT2: "!h", INT4: "!i", INT8: "!q", FLOAT4: "!f", FLOAT8: "!d"}
    if oid in formats:
        return struct.unpack(formats[oid], data)[0]
    if oid == BOOL:
        return data != b"\x00"
    return data.decode()
