"""docs/dialect.md promises what the code does: every function, aggregate and limit, with its value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sqlmpc.plan.cells import MAX_CELLS
from sqlmpc.sql import limits
from sqlmpc.sql.binning import MAX_BUCKETS
from sqlmpc.sql.parser import AGGREGATE_NAMES, CAST_TYPES, SCALAR_NAMES

DOC = (Path(__file__).parent.parent / "docs" / "dialect.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", SCALAR_NAMES + AGGREGATE_NAMES + ["EXTRACT"])
def test_every_function_is_documented(name):
    assert re.search(rf"`{name}[(`]", DOC), name          # `NAME(...)` or `NAME`


def test_every_cast_type_is_documented():
    section = DOC[DOC.index("CAST(x AS type)"):]
    for name in CAST_TYPES:
        assert name in section[:400], name


@pytest.mark.parametrize("label, value", [
    ("statement length", limits.MAX_STATEMENT_CHARS),
    ("tokens per statement", limits.MAX_TOKENS),
    ("expression nesting", limits.MAX_DEPTH),
    ("IN list", limits.MAX_IN_ITEMS),
    ("select list", limits.MAX_SELECT_ITEMS),
    ("aggregates", limits.MAX_AGGREGATES),
    ("WIDTH_BUCKET buckets", MAX_BUCKETS),
    ("cells of a GROUP BY", MAX_CELLS),
])
def test_every_limit_is_documented_with_its_value(label, value):
    row = next(line for line in DOC.splitlines() if line.startswith(f"| {label} |"))
    assert f"{value:,}" in row.split("|")[2], row
