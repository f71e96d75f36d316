"""Rendering results: full-precision, right-aligned numbers, no wrapping off a terminal, the suppression flag."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa

from sqlmpc.output import render, to_csv, to_json, with_suppressed
from sqlmpc.result import Result


def result() -> Result:
    table = pa.table({"region": ["North", "South-South-South-South-South-South"],
                      "avg_cost_eur_over_all_claims_in_the_year": [9999.7, None],
                      "patients_with_at_least_one_claim": [12345678, None]})
    return Result(table, [False, True], min_cell_size=10)


def test_numbers_at_full_precision_and_right_aligned():
    out = io.StringIO()
    render(result(), "table", out)
    text = out.getvalue()
    assert "9999.7" in text and "1e+04" not in text and "12345678" in text
    row = next(line for line in text.splitlines() if "North" in line)
    cells = [c for c in row.split("│")[1:-1]]
    assert cells[1].endswith("9999.7 ") and cells[1].startswith("  ")      # right-aligned in its column
    assert cells[2].endswith("12345678 ")


def test_no_wrapping_at_80_columns_when_not_a_terminal():
    out = io.StringIO()
    render(result(), "table", out)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) > 80
    assert sum("North" in line for line in lines) == 1
    assert any("avg_cost_eur_over_all_claims_in_the_year" in line for line in lines)    # the header in one piece


def test_csv_and_json_carry_the_suppressed_flag():
    rows = list(csv.DictReader(io.StringIO(to_csv(result()))))
    assert [r["_suppressed"] for r in rows] == ["false", "true"]
    assert rows[1]["patients_with_at_least_one_claim"] == ""
    assert [r["_suppressed"] for r in json.loads(to_json(result()))] == [False, True]
    assert with_suppressed(result()).column("_suppressed").to_pylist() == [False, True]
