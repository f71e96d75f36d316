"""Command-line details: options where users put them."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sqlmpc
from sqlmpc.catalog import load_federation
from sqlmpc.plan.compile import compile


def test_demo_takes_persons_after_the_subcommand(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "demo", "--persons", "60", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(60 persons" in done.stdout
    assert load_federation(tmp_path / "federation.toml").party("bureau") is not None


def test_f_runs_a_script_and_refuses_a_federation_file(demo_path, tmp_path):
    script = tmp_path / "s.sql"
    script.write_text(".mode csv\nSELECT COUNT(*) AS n FROM hospital.patients p;\n")
    done = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "--federation", str(demo_path), "--oracle",
                           "-f", str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "n,_suppressed"
    done = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "--oracle", "-f", str(demo_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"--federation {demo_path}" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.mpc
def test_connect_to_the_peer_port_says_which_port_to_use(demo_path, tmp_path):
    from test_network import Federation

    nodes = Federation(demo_path, tmp_path)
    nodes.start("hospital")
    try:
        peer = nodes.ports["hospital"][0]
        done = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "--connect",
                               f"sqlmpc+insecure://127.0.0.1:{peer}", "-c", "SHOW TABLES"],
                              capture_output=True, text=True, timeout=60)
    finally:
        nodes.stop()
    assert done.returncode == 1
    assert "peer port" in done.stderr and f"127.0.0.1:{peer + 1}" in done.stderr and "Traceback" not in done.stderr


def test_the_plan_hash_is_the_same_from_the_cli_the_driver_and_with_parameters(demo_path):
    """One compile entry: however a query reaches the planner, its plan (and hash) is the same."""
    sql = ("SELECT c.category, COUNT(*) AS n FROM insurer.claims c "
           "WHERE c.year = 2024 GROUP BY c.category ORDER BY c.category")
    done = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "--federation", str(demo_path), "explain", sql],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cli_line = done.stdout.splitlines()[0]
    assert cli_line.startswith("Plan ")
    with sqlmpc.connect(demo_path, oracle=True) as con:
        driver_line = con.execute("EXPLAIN " + sql.replace("SELECT", "select\n ")).fetchall()[0][0]
        fed = con.federation
    assert driver_line == cli_line
    literal = compile(sql, fed)
    with_parameter = compile(sql.replace("2024", "?"), fed, [2024])
    assert with_parameter.digest == literal.digest and with_parameter.sql == literal.sql
    assert compile(sql.replace("2024", "?"), fed, [2023]).digest != literal.digest
