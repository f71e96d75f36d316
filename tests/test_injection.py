"""Text from an analyst never reaches an engine as anything but the dialect's own SQL.

Each party compiles the analyst's query itself, through the grammar and the planner, into SQL
that sqlglot generates; names and strings are quoted there, parameters are bound as literals,
and a party's DuckDB has no file access once its tables are loaded.  Each statement below tries
to call a file or table function, run a second statement or write a file, in a name, an alias,
a string, a parameter, ORDER BY, EXPLAIN or DESCRIBE: refused, or run as the harmless query it
spells, and no file is read or written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sqlmpc
from sqlmpc import errors

pytestmark = pytest.mark.mpc

SECRET = "secret-canary-7f3a"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("injection")
    secret = root / "secret.csv"
    secret.write_text(f"x\n{SECRET}\n")
    return secret, root / "written.csv"


def hostile(secret: Path, target: Path) -> list[tuple[str, list | None]]:
    copy = f"COPY (SELECT 1) TO '{target}'"
    return [
        (f"SELECT COUNT(*) FROM read_csv('{secret}')", None),
        (f"SELECT COUNT(*) FROM bureau.persons b WHERE b.region = (SELECT x FROM read_csv('{secret}'))", None),
        (f"SELECT COUNT(*) FROM bureau.persons b WHERE b.region = read_text('{secret}')", None),
        (f"SELECT COUNT(*) FROM bureau.persons b; {copy}", None),
        (f"{copy}; SELECT COUNT(*) FROM bureau.persons b", None),
        (f"SELECT COUNT(*) AS \"n\"\" FROM read_csv('{secret}') --\" FROM bureau.persons b", None),
        (f"SELECT COUNT(*) AS n FROM bureau.persons b WHERE b.region = 'x'' ; {copy}; --'", None),
        ("SELECT COUNT(*) AS n FROM bureau.persons b WHERE b.region = ?", [f"North'); {copy}; --"]),
        (f"SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region "
         f"ORDER BY (SELECT COUNT(*) FROM read_csv('{secret}'))", None),
        (f"SELECT COUNT(*) FROM \"bureau\".\"persons; {copy}; --\" b", None),
        (f"SELECT COUNT(*) FROM bureau.persons b /* {copy} */ -- {copy}", None),
        (f"EXPLAIN SELECT COUNT(*) FROM read_csv('{secret}')", None),
        (f"DESCRIBE bureau.persons; {copy}", None),
        (f"SELECT COUNT(*) FROM bureau.persons b WHERE b.region = 'North' UNION ALL SELECT x FROM read_csv('{secret}')",
         None),
    ]


def test_no_statement_reads_or_writes_a_file(demo_path, files):
    secret, target = files
    outcomes = []
    with sqlmpc.connect(demo_path) as con:
        for sql, params in hostile(secret, target):
            try:
                rows = con.execute(sql, params).fetchall()
                outcomes.append(("ran", sql, repr(rows)))
            except errors.ProgrammingError as exc:        # refused: syntax, unknown names, policy
                outcomes.append(("refused", sql, str(exc)))
            assert not target.exists(), sql
    for kind, sql, text in outcomes:
        assert SECRET not in text, (sql, text)
    # Three are ordinary queries in disguise (an odd alias, a parameter, a comment) and ran as
    # written; every other one was refused before any party worked.
    ran = [sql for kind, sql, _ in outcomes if kind == "ran"]
    assert ran == [sql for i, (sql, _) in enumerate(hostile(secret, target)) if i in (5, 7, 10)], outcomes


def test_a_parameter_is_a_value_not_sql(demo_path, files):
    secret, target = files
    with sqlmpc.connect(demo_path) as con:
        cur = con.execute("SELECT b.region, COUNT(*) AS n FROM bureau.persons b WHERE b.region <> ? "
                          "GROUP BY b.region", [f"x'); COPY (SELECT 1) TO '{target}'; --"])
        assert len(cur.fetchall()) > 1          # every region differs from that text
    assert not target.exists()
