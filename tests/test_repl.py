"""The ``sqlmpc`` shell through a real pseudo-terminal, and its non-interactive forms."""

from __future__ import annotations

import os
import re
from pathlib import Path
import subprocess
import sys

import pexpect
import pytest

QUERIES = Path(__file__).parent.parent / "queries"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# prompt_toolkit turns bracketed paste on while it reads a line and off when the line is entered.
INPUT_STARTS, INPUT_DONE = r"\x1b\[\?2004h", r"\x1b\[\?2004l"


def clean(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


class Terminal:
    """A spawned shell; ``until(pattern)`` returns the plain text printed before the pattern."""

    def __init__(self, args, env):
        self.child = pexpect.spawn(sys.executable, ["-m", "sqlmpc.cli.main", *args], env=env,
                                   dimensions=(60, 200), encoding="utf-8", timeout=60)

    def until(self, pattern: str) -> str:
        self.child.expect(pattern)
        return clean(self.child.before)

    def run(self, line: str) -> str:
        """Type a line (and Enter), return what it printed before the next prompt."""
        self.child.send(line + "\r")
        self.child.expect(INPUT_DONE)
        return self.until(INPUT_STARTS)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return dict(os.environ, SQLMPC_HISTORY=str(home / "history"), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm",
                HOME=str(home))


@pytest.fixture(scope="module")
def shell(demo_path, env):
    term = Terminal(["--federation", str(demo_path)], env)
    banner = term.until(INPUT_STARTS)
    assert "Connected to federation" in banner and "k = 10" in banner
    yield term
    if term.child.isalive():
        term.child.terminate(force=True)


@pytest.mark.mpc
def test_secure_query_typed_with_completion_over_two_lines(shell):
    out = shell.run(".timer on")
    assert "Error" not in out
    child = shell.child
    # Tab completes a table after 'party.', and a column after an alias defined on the previous line.
    # (Completion runs in the background: wait for it before typing on.)
    child.send("SELECT b.age_band, COUNT(DISTINCT p.pid) AS n FROM hospital.pat\t")
    child.expect("ients")         # the rest of "patients" (the terminal redraws only what changed)
    child.send(" p JOIN bureau.pers\t")
    child.expect("ons")          # the rest of "persons" (not "sons": the typed "s" need not be redrawn)
    child.send(" b\r")
    child.expect(r"\.\.\.>")
    child.send("ON b.pid = p.pid WHERE p.diagnosis = 'HF' GROUP BY b.age_b\t")
    child.expect("and")
    child.send(" ORDER BY b.age_band;\r")
    child.expect("Run Time: [0-9.]+ s")
    out = clean(child.before)
    child.expect(INPUT_STARTS)
    assert "Error" not in out        # the completed names resolved (the history test reads the lines)
    table = out[out.index("┏"):]
    assert re.search(r"│ 0-17\s+│\s+· │", table)              # a suppressed cell (numbers are right-aligned)
    assert re.search(r"│ 65-79\s+│\s+\d{2,} │", table)         # a released one
    assert re.search(r"6 rows, \d suppressed \(· suppressed: fewer than 10 persons, a dominant contributor, or protecting another cell\)", table)
    shell.run(".timer off")


def test_explain(shell):
    out = shell.run(".explain SELECT b.region, COUNT(*) FROM bureau.persons b GROUP BY b.region")
    assert "Local part" in out and "Leakage declaration" in out


def test_error_shows_a_caret_under_the_token(shell):
    sql = "SELECT COUNT(*) FROM hospital.patients p WHERE p.sex = = 'F';"
    out = shell.run(sql)
    assert "Error:" in out
    line = next(l for l in out.splitlines() if l.startswith("LINE 1: "))
    caret = out.splitlines()[out.splitlines().index(line) + 1]
    assert line == "LINE 1: " + sql.rstrip(";")
    assert caret.index("^") == len("LINE 1: ") + sql.index("= =") + 2     # under the second '='


def test_policy_error_is_printed_and_the_shell_goes_on(shell):
    out = shell.run("SELECT p.pid FROM hospital.patients p;")
    assert "key-only-in-join" in out and "^" in out


def test_tables_and_schema(shell):
    out = shell.run(".tables")
    assert "hospital.patients" in out and "bureau.persons" in out and "insurer.claims" in out
    out = shell.run(".schema hospital.patients")
    assert re.search(r"diagnosis\s+VARCHAR\s+dimension", out) and re.search(r"pid\s+VARCHAR\s+key", out)
    assert "no table" in shell.run(".schema nope.nothing")


def test_mode_csv(shell):
    shell.run(".mode csv")
    out = shell.run("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region ORDER BY b.region;")
    lines = [l for l in out.splitlines() if re.match(r"^(region|East|North|South|West),", l)]
    assert lines[0] == "region,n,_suppressed" and [l.split(",")[0] for l in lines[1:]] == ["East", "North", "South", "West"]
    assert sum(int(l.split(",")[1]) for l in lines[1:]) == 2000
    assert "mode is csv" in shell.run(".mode bogus")
    shell.run(".mode table")


def test_ctrl_c_clears_the_input(shell):
    shell.child.send("SELECT nonsense FROM\r")             # an unfinished statement: a continuation line
    shell.child.expect(r"\.\.\.>")
    shell.child.send("hospital.")
    shell.child.sendcontrol("c")
    shell.until(INPUT_DONE)
    shell.until(INPUT_STARTS)
    out = shell.run(".tables")                 # a dot command again: the unfinished statement is gone
    assert "bureau.persons" in out and "Error" not in out


@pytest.mark.mpc
def test_ctrl_c_cancels_a_secure_query_and_the_shell_goes_on(shell):
    sql = " ".join(line for line in (QUERIES / "app_effectiveness.sql").read_text().splitlines()
                   if not line.startswith("--"))
    shell.child.send(sql + "\r")
    shell.child.expect(INPUT_DONE)
    shell.child.expect("running across the parties")      # the spinner: the query is under way
    shell.child.sendcontrol("c")
    out = shell.until(INPUT_STARTS)
    assert "cancelled" in out and "restarting the parties" in out and "┏" not in out
    # One line: the parties run in their own session and never see the terminal's Ctrl-C.
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert len([line for line in out.splitlines() if line.strip()]) <= 3
    out = shell.run("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region;")
    assert "North" in out and "4 rows" in out


def test_quit_and_history(shell, env):
    """What was typed in this session lands in the history file, and .quit exits 0."""
    shell.run(".tables")
    shell.run("SHOW POLICY;")
    shell.run("SHOW")
    shell.run("TABLES;")
    shell.child.send(".quit\r")
    shell.child.expect(pexpect.EOF)
    shell.child.close()
    assert shell.child.exitstatus == 0
    history = open(env["SQLMPC_HISTORY"]).read()
    assert "+.tables" in history and "+SHOW POLICY;" in history
    entries = [e.strip().split("\n", 1)[1] for e in history.split("\n# ")[1:]]       # after each timestamp
    assert "+SHOW\n+TABLES;" in entries                      # one entry per statement, not per line
    assert "+SHOW" not in [e for e in entries if "\n" not in e]


# -- non-interactive ------------------------------------------------------------


def sqlmpc(*args, stdin=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_command_with_csv_format(demo_path):
    done = sqlmpc("--federation", demo_path, "--oracle", "--format", "csv", "-c",
                  "SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region ORDER BY b.region")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "region,n,_suppressed" and len(lines) == 5 and sum(int(l.split(",")[1]) for l in lines[1:]) == 2000


def test_script_on_stdin(demo_path):
    script = """-- two statements
SELECT COUNT(*) AS n FROM hospital.patients p;
SELECT b.region, COUNT(*) AS n
FROM bureau.persons b GROUP BY b.region ORDER BY b.region;
"""
    done = sqlmpc("--federation", demo_path, "--format", "json", stdin=script)      # the secure path
    assert done.returncode == 0, done.stderr
    import json
    first, second = done.stdout.split("\n]\n")[:2]
    assert json.loads(first + "]")[0]["n"] > 10
    assert [r["region"] for r in json.loads(second + "]")] == ["East", "North", "South", "West"]


def test_script_error_exits_non_zero_with_the_caret(demo_path):
    done = sqlmpc("--federation", demo_path, "--oracle", stdin="SELECT COUNT(*) FROM hospital.nothing x;\n")
    assert done.returncode == 1
    assert "Error:" in done.stderr and "hospital.nothing" in done.stderr and "^" in done.stderr


def test_dot_commands_in_a_piped_script_and_in_read(demo_path, tmp_path):
    included = tmp_path / "included.sql"
    included.write_text(".mode markdown\nSELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region\n"
                        "ORDER BY b.region;\n")
    script = f""".tables
.mode csv
SELECT COUNT(*) AS n FROM hospital.patients p;
.read {included}
"""
    done = sqlmpc("--federation", demo_path, "--oracle", stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "bureau.persons" in out                            # .tables
    assert "n,_suppressed" in out                             # .mode csv applied to the query
    assert any(line.startswith("| East |") for line in out)             # .read, .mode markdown


def test_unknown_dot_command_in_a_script_fails(demo_path):
    done = sqlmpc("--federation", demo_path, "--oracle", stdin=".bogus\nSELECT COUNT(*) FROM hospital.patients p;\n")
    assert done.returncode == 1 and "unknown command .bogus" in done.stderr


@pytest.mark.mpc
def test_command_shows_the_secure_stage_on_a_terminal(demo_path, env):
    term = Terminal(["--federation", str(demo_path), "--format", "csv", "-c",
                     "SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region ORDER BY b.region"], env)
    term.child.expect(r"running: (local|input|shuffle|join|aggregate|threshold|reveal) \.\.\. \d+\.\d s")
    out = term.until(pexpect.EOF)
    assert "region,n,_suppressed" in out and "East," in out
