"""``sqlmpc run``: run saved queries; with ``--check`` compare them with their expected results.

``--out DIR`` also writes each result to DIR/<query>.<ext> as CSV (the
default), JSON, Markdown, Parquet or Arrow IPC (the ``--format`` option;
suppressed cells are empty / null and the ``_suppressed`` column flags them).

``--check`` compares cell by cell (numbers to a relative 1e-9) and prints only
the cells that differ; ``--junit FILE`` writes a JUnit XML report for CI
systems and ``--report FILE.html`` one HTML page with a table and a chart per query.  Exit codes: 0 every query ran (and matched), 1 a query failed or
differed, 2 bad command line.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.feather as feather
import pyarrow.parquet as pq

from sqlmpc import dbapi, errors
from sqlmpc.cli.progress import StageProgress
from sqlmpc.junit import write_junit
from sqlmpc.output import SUPPRESSED_COLUMN, to_csv, to_json, to_markdown, with_suppressed
from sqlmpc.report import html_report

REL_TOL = 1e-9     # fixed-point results are exact ratios; the oracle computes in DOUBLE
EXPECTED_SUFFIX = ".expected.csv"


class QueryFileError(errors.InterfaceError):
    """A saved query file given to ``sqlmpc run`` does not exist or cannot be read."""


def same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=1e-9)


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def same_csv(got: str, expected: str) -> bool:
    return not differences(got, expected)


def differences(got: str, expected: str) -> list[str]:
    """What differs between two CSV results, cell by cell: one line per differing cell.

    When the shape differs (columns or number of rows) there are no cells to pair:
    a unified diff of the lines is returned instead.
    """
    g, e = _rows(got), _rows(expected)
    if not e or not g or g[0] != e[0] or len(g) != len(e) or any(len(r) != len(s) for r, s in zip(g, e)):
        return list(difflib.unified_diff(expected.splitlines(True), got.splitlines(True),
                                         fromfile="expected", tofile="result"))
    header, out = e[0], []
    for i, (r, s) in enumerate(zip(g[1:], e[1:]), start=1):
        for name, a, b in zip(header, r, s):
            if not same_value(a, b):
                out.append(f"  row {i}, {name}: expected {b or 'NULL'}, got {a or 'NULL'}\n")
    return out


def result_csv_like(result, expected: str) -> str:
    """The result as CSV in the expected file's layout (older files have no _suppressed column)."""
    header = _rows(expected)[:1]
    return to_csv(result, suppressed_column=bool(header) and SUPPRESSED_COLUMN in header[0])


OUT_FORMATS = {"csv": "csv", "json": "json", "markdown": "md", "parquet": "parquet", "arrow": "arrow"}


def write_result(result, directory: Path, stem: str, fmt: str) -> Path:
    fmt = fmt if fmt in OUT_FORMATS else "csv"      # "table" (the screen default) writes CSV
    out = directory / f"{stem}.{OUT_FORMATS[fmt]}"
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(with_suppressed(result, perturbed_column=True), out)
    elif fmt == "arrow":
        feather.write_feather(with_suppressed(result, perturbed_column=True), out)
    else:
        out.write_text({"csv": to_csv, "json": lambda r: to_json(r) + "\n", "markdown": to_markdown}[fmt](result))
    return out


def query_files(names: list[str]) -> list[Path]:
    """The .sql files to run: directories give their *.sql; expected results are skipped; missing files refused."""
    files, missing = [], []
    for name in names:
        path = Path(name)
        if path.is_dir():
            files.extend(sorted(path.glob("*.sql")))
        elif path.name.endswith(EXPECTED_SUFFIX):
            continue                                    # `queries/*` also matches the expected results
        elif not path.is_file():
            missing.append(name)
        else:
            files.append(path)
    if missing:
        raise QueryFileError(f"no such query file: {', '.join(missing)}")
    if not files:
        raise QueryFileError(f"no .sql files among {', '.join(names)}")
    return files


@dataclass
class Outcome:
    path: Path
    seconds: float
    failure: str | None = None      # one line
    details: str = ""               # the differing cells, or the error
    result: object = None           # the Result, when the query ran


def run_files(args, federation) -> int:
    files = query_files(args.files)
    outcomes: list[Outcome] = []
    with dbapi.connect(federation, oracle=getattr(args, "oracle", False)) as con:
        for path in files:
            outcome = _run_one(con, path, args)
            outcomes.append(outcome)
    failures = sum(o.failure is not None for o in outcomes)
    if getattr(args, "junit", None):
        write_junit(outcomes, Path(args.junit))
    if getattr(args, "report", None):
        Path(args.report).write_text(html_report(outcomes))
    if args.check:
        print(f"{len(outcomes) - failures} passed, {failures} failed")
    return 1 if failures else 0


def _run_one(con, path: Path, args) -> Outcome:
    started = time.perf_counter()
    try:
        with StageProgress(path.stem) as progress:
            result = con.run(path.read_text(), progress=None if con.oracle else progress)
    except errors.Error as exc:
        print(f"FAIL {path}: {exc}")
        return Outcome(path, time.perf_counter() - started, f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                       str(exc))
    seconds = time.perf_counter() - started
    expected_path = path.with_name(path.name.removesuffix(".sql") + EXPECTED_SUFFIX)
    if args.out:
        write_result(result, Path(args.out), path.stem, getattr(args, "format", "csv"))
    if getattr(args, "write_expected", False):
        expected_path.write_text(to_csv(result))
        print(f"wrote {expected_path}")
    elif args.check:
        if not expected_path.exists():
            print(f"FAIL {path}: no {expected_path.name}")
            return Outcome(path, seconds, f"no {expected_path.name}", result=result)
        expected = expected_path.read_text()
        diff = differences(result_csv_like(result, expected), expected)
        if not diff:
            print(f"ok   {path}")
            return Outcome(path, seconds, result=result)
        print(f"FAIL {path}: result differs from {expected_path.name}")
        sys.stdout.writelines(diff)
        return Outcome(path, seconds, f"result differs from {expected_path.name}", "".join(diff), result)
    else:
        print(f"-- {path}")
        sys.stdout.write(to_csv(result))
    return Outcome(path, seconds, result=result)
