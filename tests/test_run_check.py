"""``sqlmpc run [--check]`` as CI runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

QUERIES = Path(__file__).parent.parent / "queries"
SECURE = ["small_cells_suppressed", "app_engagement_by_age"]


def sqlmpc(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    """The default 5,000-person demo the checked-in expected files are for (reuses SQLMPC_CACHE)."""
    from sqlmpc.party.embedded import demo_federation_path

    cache = os.environ.get("SQLMPC_CACHE") or (
        "/tmp/sqlmpc-cache" if Path("/tmp/sqlmpc-cache").is_dir() else str(tmp_path_factory.mktemp("cache")))
    old = os.environ.get("SQLMPC_CACHE")
    os.environ["SQLMPC_CACHE"] = cache
    try:
        return demo_federation_path(5000)
    finally:
        if old is None:
            del os.environ["SQLMPC_CACHE"]


@pytest.fixture(scope="module")
def small_queries(tmp_path_factory, demo_path):
    """Copies of some saved queries with expected files for the small test demo, written by the oracle."""
    d = tmp_path_factory.mktemp("queries")
    for name in SECURE:
        shutil.copy(QUERIES / f"{name}.sql", d)
    done = sqlmpc("--federation", demo_path, "--oracle", "run", "--write-expected", *sorted(d.glob("*.sql")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == len(SECURE)
    return d


def test_saved_queries_match_their_expected_files_with_junit_and_report(default_demo, tmp_path):
    files = sorted(QUERIES.glob("*.sql"))
    done = sqlmpc("--federation", default_demo, "--oracle", "run", "--check", QUERIES,
                  "--junit", tmp_path / "junit.xml", "--report", tmp_path / "report.html")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(files)} passed, 0 failed" in done.stdout
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == (str(len(files)), "0")
    assert [c.get("name") for c in suite.iter("testcase")] == [f.stem for f in files]
    assert all(c.find("failure") is None and float(c.get("time")) > 0 for c in suite.iter("testcase"))
    page = (tmp_path / "report.html").read_text()
    assert re.findall(r'<h2 id="([^"]+)"', page) == [f.stem for f in files]
    assert f"{len(files)} of {len(files)} ok" in page and page.count("<table>") == len(files)


@pytest.mark.mpc
def test_secure_check_passes_and_writes_results(small_queries, demo_path, tmp_path):
    done = sqlmpc("--federation", demo_path, "run", "--check", "--out", tmp_path / "out",
                  *sorted(small_queries.glob("*.sql")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed, 0 failed" in done.stdout
    for name in SECURE:
        assert (tmp_path / "out" / f"{name}.csv").read_text() == (small_queries / f"{name}.expected.csv").read_text()


@pytest.mark.mpc
def test_run_shows_each_querys_secure_stage_on_a_terminal(small_queries, demo_path):
    import pexpect

    query = small_queries / "small_cells_suppressed.sql"
    child = pexpect.spawn(sys.executable, ["-m", "sqlmpc.cli.main", "--federation", str(demo_path), "run", "--check",
                                           str(query)], dimensions=(40, 200), encoding="utf-8", timeout=120)
    child.expect(r"small_cells_suppressed: (local|input|shuffle|join|aggregate|threshold|reveal) \.\.\. \d+\.\d s")
    child.expect("1 passed, 0 failed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_difference_shows_only_the_differing_cell(small_queries, demo_path, tmp_path):
    for name in SECURE:
        shutil.copy(small_queries / f"{name}.sql", tmp_path)
        shutil.copy(small_queries / f"{name}.expected.csv", tmp_path)
    expected = tmp_path / "small_cells_suppressed.expected.csv"
    rows = list(csv.reader(io.StringIO(expected.read_text())))
    header = rows[0]
    assert header[-1] == "_suppressed"                       # written by --write-expected
    col = header.index("patients")
    i = next(i for i, r in enumerate(rows) if i > 0 and r[col].isdigit())
    computed = rows[i][col]
    rows[i][col] = str(int(computed) + 1)
    with expected.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)

    done = sqlmpc("--federation", demo_path, "--oracle", "run", "--check", *sorted(tmp_path.glob("*.sql")),
                  "--junit", tmp_path / "junit.xml")
    assert done.returncode == 1
    out = done.stdout
    assert "FAIL" in out and "small_cells_suppressed.expected.csv" in out
    assert "ok   " in out and "1 passed, 1 failed" in out
    cells = [line for line in out.splitlines() if line.startswith("  row ")]
    assert cells == [f"  row {i}, patients: expected {int(computed) + 1}, got {computed}"]
    assert "+++" not in out                                  # no whole-file diff for one cell

    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["small_cells_suppressed"]
    assert f"expected {int(computed) + 1}, got {computed}" in failed[0].find("failure").text


def test_numbers_compare_with_a_tolerance_not_as_text(small_queries, demo_path, tmp_path):
    shutil.copy(small_queries / "app_engagement_by_age.sql", tmp_path)
    rows = list(csv.reader(io.StringIO((small_queries / "app_engagement_by_age.expected.csv").read_text())))
    floats = [(i, j) for i, r in enumerate(rows[1:], 1) for j, v in enumerate(r) if "." in v and v[0].isdigit()]
    assert floats
    for i, j in floats:                                      # the same numbers, formatted differently
        rows[i][j] = f"{float(rows[i][j]):.15e}"
    with (tmp_path / "app_engagement_by_age.expected.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    done = sqlmpc("--federation", demo_path, "--oracle", "run", "--check", tmp_path / "app_engagement_by_age.sql")
    assert done.returncode == 0, done.stdout


def test_missing_query_file_is_an_error_not_a_traceback(demo_path, tmp_path):
    done = sqlmpc("--federation", demo_path, "--oracle", "run", "--check", tmp_path / "nope.sql")
    assert done.returncode == 1
    assert "no such query file" in done.stderr and "nope.sql" in done.stderr and "Traceback" not in done.stderr


def test_a_glob_skips_the_expected_files(small_queries, demo_path):
    everything = sorted(small_queries.iterdir())            # what `queries/*` expands to
    assert any(p.name.endswith(".expected.csv") for p in everything)
    done = sqlmpc("--federation", demo_path, "--oracle", "run", "--check", *everything)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(SECURE)} passed, 0 failed" in done.stdout


def test_out_carries_the_suppressed_flag_in_every_table_format(small_queries, demo_path, tmp_path):
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    query = small_queries / "small_cells_suppressed.sql"
    for fmt in ("csv", "parquet", "arrow"):
        done = sqlmpc("--federation", demo_path, "--oracle", "run", "--out", tmp_path, "--format", fmt, query)
        assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "small_cells_suppressed.csv").open()))
    for table in (pq.read_table(tmp_path / "small_cells_suppressed.parquet"),
                  feather.read_table(tmp_path / "small_cells_suppressed.arrow")):
        flags = table.column("_suppressed").to_pylist()
        assert flags == [r["_suppressed"] == "true" for r in rows]
        assert any(flags) and not all(flags)
        patients = table.column("patients").to_pylist()
        assert all(p is None for p, s in zip(patients, flags) if s)


def test_version():
    done = sqlmpc("--version")
    assert done.returncode == 0 and re.fullmatch(r"sqlmpc \d+\.\d+\.\d+\S*\n", done.stdout)


def test_missing_expected_file_fails(demo_path, tmp_path):
    shutil.copy(QUERIES / "claim_categories.sql", tmp_path)
    done = sqlmpc("--federation", demo_path, "--oracle", "run", "--check", tmp_path / "claim_categories.sql")
    assert done.returncode == 1 and "no claim_categories.expected.csv" in done.stdout


def test_out_formats(small_queries, demo_path, tmp_path):
    query = small_queries / "small_cells_suppressed.sql"
    for fmt in ("json", "markdown"):
        done = sqlmpc("--federation", demo_path, "--oracle", "--format", fmt, "run", "--out", tmp_path, query)
        assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "small_cells_suppressed.json").read_text())
    assert rows[0] == {"age_band": "0-17", "region": "East", "patients": None, "_suppressed": True}
    assert {r["_suppressed"] for r in rows} == {True, False}         # the flag on every row
    markdown = (tmp_path / "small_cells_suppressed.md").read_text().splitlines()
    assert markdown[0] == "| age_band | region | patients |" and "| 0-17 | East | · |" in markdown


def test_parquet_output(federation, tmp_path):
    # write_result itself (the CLI's --format parquet is tested above).
    import pyarrow.parquet as pq

    from sqlmpc.check import write_result
    from sqlmpc.oracle import run_oracle

    result = run_oracle((QUERIES / "small_cells_suppressed.sql").read_text(), federation)
    out = write_result(result, tmp_path, "cells", "parquet")
    table = pq.read_table(out)
    assert out.name == "cells.parquet" and table.drop_columns(["_suppressed"]).equals(result.table)
    assert table.column("_suppressed").to_pylist() == result.suppressed
    assert table.column("patients").null_count == sum(result.suppressed) > 0
