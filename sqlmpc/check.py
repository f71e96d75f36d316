"""``sqlmpc run``: run saved queries; with ``--check`` compare them with their expected results.

``--out DIR`` also writes each result to DIR/<query>.<ext> as CSV (the
default), JSON, Markdown or Parquet (the ``--format`` option; suppressed
cells are empty / null).
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import sys
from pathlib import Path

from sqlmpc import errors
from sqlmpc.output import to_csv

REL_TOL = 1e-9     # fixed-point results are exact ratios; the oracle computes in DOUBLE


def same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=1e-9)


def same_csv(got: str, expected: str) -> bool:
    g = list(csv.reader(io.StringIO(got)))
    e = list(csv.reader(io.StringIO(expected)))
    return len(g) == len(e) and all(
        len(r) == len(s) and all(same_value(a, b) for a, b in zip(r, s)) for r, s in zip(g, e))


OUT_FORMATS = {"csv": "csv", "json": "json", "markdown": "md", "parquet": "parquet"}


def write_result(result, directory: Path, stem: str, fmt: str) -> Path:
    from sqlmpc.output import to_json, to_markdown

    fmt = fmt if fmt in OUT_FORMATS else "csv"      # "table" (the screen default) writes CSV
    out = directory / f"{stem}.{OUT_FORMATS[fmt]}"
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(result.table, out)
    else:
        out.write_text({"csv": to_csv, "json": lambda r: to_json(r) + "\n", "markdown": to_markdown}[fmt](result))
    return out


def run_files(args, federation) -> int:
    import sqlmpc

    failures = 0
    with sqlmpc.dbapi.Connection(federation, oracle=getattr(args, "oracle", False)) as con:
        for name in args.files:
            path = Path(name)
            try:
                result = con.run(path.read_text())
            except errors.Error as exc:
                failures += 1
                print(f"FAIL {path}: {exc}")
                continue
            got = to_csv(result)
            expected_path = path.with_suffix(".expected.csv")
            if args.out:
                write_result(result, Path(args.out), path.stem, getattr(args, "format", "csv"))
            if getattr(args, "write_expected", False):
                expected_path.write_text(got)
                print(f"wrote {expected_path}")
            elif args.check:
                if not expected_path.exists():
                    print(f"FAIL {path}: no {expected_path.name}")
                    failures += 1
                    continue
                expected = expected_path.read_text()
                if same_csv(got, expected):
                    print(f"ok   {path}")
                else:
                    failures += 1
                    print(f"FAIL {path}: result differs from {expected_path.name}")
                    sys.stdout.writelines(difflib.unified_diff(
                        expected.splitlines(True), got.splitlines(True),
                        fromfile=str(expected_path), tofile="result"))
            else:
                print(f"-- {path}")
                sys.stdout.write(got)
    if args.check:
        print(f"{len(args.files) - failures} passed, {failures} failed")
    return 1 if failures else 0
