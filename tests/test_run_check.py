"""``sqlmpc run [--check]`` as CI runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


def test_saved_queries_match_their_expected_files(default_demo):
    files = sorted(QUERIES.glob("*.sql"))
    done = sqlmpc("--federation", default_demo, "--oracle", "run", "--check", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(files)} passed, 0 failed" in done.stdout


@pytest.mark.mpc
def test_secure_check_passes_and_writes_results(small_queries, demo_path, tmp_path):
    done = sqlmpc("--federation", demo_path, "run", "--check", "--out", tmp_path / "out",
                  *sorted(small_queries.glob("*.sql")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed, 0 failed" in done.stdout
    for name in SECURE:
        assert (tmp_path / "out" / f"{name}.csv").read_text() == (small_queries / f"{name}.expected.csv").read_text()


def test_a_difference_fails_with_a_unified_diff(small_queries, demo_path, tmp_path):
    for name in SECURE:
        shutil.copy(small_queries / f"{name}.sql", tmp_path)
        shutil.copy(small_queries / f"{name}.expected.csv", tmp_path)
    expected = tmp_path / "small_cells_suppressed.expected.csv"
    lines = expected.read_text().splitlines(True)
    i = next(i for i, line in enumerate(lines) if line.rstrip().split(",")[-1].isdigit() and i > 0)
    edited = lines[i].rstrip("\n").rsplit(",", 1)
    lines[i] = f"{edited[0]},{int(edited[1]) + 1}\n"
    expected.write_text("".join(lines))

    done = sqlmpc("--federation", demo_path, "--oracle", "run", "--check", *sorted(tmp_path.glob("*.sql")))
    assert done.returncode == 1
    out = done.stdout
    assert "FAIL" in out and "small_cells_suppressed.expected.csv" in out
    assert "ok   " in out and "1 passed, 1 failed" in out
    assert f"--- {expected}" in out and "+++ result" in out
    assert f"-{lines[i]}" in out                              # the edited line, as expected
    assert f"+{edited[0]},{edited[1]}\n" in out               # and as computed


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
    markdown = (tmp_path / "small_cells_suppressed.md").read_text().splitlines()
    assert markdown[0] == "| age_band | region | patients |" and "| 0-17 | East | · |" in markdown


def test_parquet_output(federation, tmp_path):
    # (The CLI's --format does not offer parquet yet; write_result does.)
    import pyarrow.parquet as pq

    from sqlmpc.check import write_result
    from sqlmpc.oracle import run_oracle

    result = run_oracle((QUERIES / "small_cells_suppressed.sql").read_text(), federation)
    out = write_result(result, tmp_path, "cells", "parquet")
    table = pq.read_table(out)
    assert out.name == "cells.parquet" and table.equals(result.table)
    assert table.column("patients").null_count == sum(result.suppressed) > 0
