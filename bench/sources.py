"""The local stage where the tables live: app_effectiveness at N persons with every party's
tables in files (DuckDB), in PostgreSQL, and in Spark.  Per source kind and party: the local
stage's seconds (first query, which validates the tables inside the engine, and a second one)
and the rows and Arrow bytes that crossed from the engine into the party's process.

    python bench/sources.py [--persons 100000] [--spark-master local[2]]

PostgreSQL: the server in SQLMPC_TEST_PG_* (as .ci/run exports), else a throwaway one
started with .ci/postgres.  Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from sqlmpc.catalog import load_federation
from sqlmpc.cli.approve import approve_lines
from sqlmpc.demo import generate
from sqlmpc.local.sources import LocalData
from sqlmpc.plan.compile import compile

ROOT = Path(__file__).resolve().parent.parent
QUERY = ROOT / "queries" / "app_effectiveness.sql"
PG_VARS = ("HOST", "PORT", "USER", "PASSWORD", "DB")


def postgres() -> tuple[dict, str | None]:
    """Connection settings, and the directory of a server started here (to stop)."""
    if all(os.environ.get(f"SQLMPC_TEST_PG_{v}") for v in PG_VARS):
        return {v.lower(): os.environ[f"SQLMPC_TEST_PG_{v}"] for v in PG_VARS}, None
    out = subprocess.run(["bash", str(ROOT / ".ci" / "postgres"), "start"], capture_output=True, text=True,
                         check=True).stdout
    env = dict(line.split("=", 1) for line in out.split())
    return {v.lower(): env[f"SQLMPC_TEST_PG_{v}"] for v in PG_VARS}, env["SQLMPC_TEST_PG_DIR"]


def load_into_postgres(pg: dict, demo: Path) -> None:
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(f"host={pg['host']} port={pg['port']} user={pg['user']} password={pg['password']} "
                      f"dbname={pg['db']}") as con, con.cursor() as cur:
        for file in sorted(demo.parent.glob("*/*.parquet")):
            cur.adbc_ingest(f"bench_{file.parent.name}_{file.stem}", pq.read_table(file), mode="replace")
        con.commit()


def federation_in(kind: str, demo: Path, out: Path, master: str) -> tuple[Path, dict[str, Path]]:
    """The demo's federation file with every table in ``kind`` (its saved queries approved again), and
    each party's own local file: its data directory (the demo's) or how it reaches its database."""
    def move(match: re.Match) -> str:
        party, name = match.group(1), match.group(2)
        head = f"[parties.{party}.tables.{name}]\n"
        if kind == "postgresql":
            return head + f'source = "postgresql"\ntable = "bench_{party}_{name}"'
        if kind == "spark":
            return head + f'source = "spark"\ntable = "parquet.`{demo.parent / party / name}.parquet`"'
        return head + f'source = "{party}/{name}.parquet"'

    text = re.sub(r'\[parties\.(\w+)\.tables\.(\w+)\]\nsource = "[^"]+"', move, demo.read_text())
    local = {}
    for party in re.findall(r"^\[parties\.(\w+)\]$", text, flags=re.MULTILINE):
        private = {"file": f'[data]\ndir = "{demo.parent}"\n',
                   "postgresql": '[postgresql]\ndsn_env = "BENCH_PG_DSN"\npassword_env = "BENCH_PG_PASSWORD"\n',
                   "spark": f'[spark]\nmaster = "{master}"\n'}[kind]
        local[party] = out.with_name(f"{out.stem}-{party}.toml")
        local[party].write_text(private)
    out.write_text(text)
    approved = approve_lines([str(QUERY)], load_federation(out, local_policy=local))
    out.write_text(re.sub(r"approved_plans = \[.*?\n\]", lambda _: approved, text, flags=re.DOTALL))
    return out, local


def local_stage(kind: str, path: Path, local: dict[str, Path]) -> list[str]:
    federation = load_federation(path, local_policy=local)
    plan = compile(QUERY.read_text(), federation)
    rows = []
    for party in federation.party_names:
        started = time.perf_counter()
        data = LocalData.open(federation, party)
        opened = time.perf_counter() - started
        seconds = []
        for _ in range(2):          # the first query also validates the tables inside the engine
            started = time.perf_counter()
            data.run_parts(plan.parts_at(party))
            seconds.append(time.perf_counter() - started)
        crossed_rows = sum(t.rows for t in data.transfers)
        crossed_bytes = sum(t.bytes for t in data.transfers)
        rows.append(f"| {kind} | {party} | {opened:.2f} | {seconds[0]:.2f} | {seconds[1]:.2f} | "
                    f"{crossed_rows:,} | {crossed_bytes / 1e6:.2f} |")
        print(rows[-1], flush=True)
        if kind != "spark":
            data.close()    # Spark's session is kept: one per process, as in a party
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--spark-master", default="local[2]")
    args = ap.parse_args()
    pg, started = postgres()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            demo = generate(Path(tmp) / "demo", persons=args.persons)
            load_into_postgres(pg, demo)
            os.environ["BENCH_PG_DSN"] = f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{pg['db']}"
            os.environ["BENCH_PG_PASSWORD"] = pg["password"]
            print(f"app_effectiveness, {args.persons:,} persons; Spark {args.spark_master}")
            print("| source | party | open (s) | local stage, 1st query (s) | 2nd query (s) | rows crossed | "
                  "MB crossed |")
            print("|---|---|---|---|---|---|---|")
            for kind in ("file", "postgresql", "spark"):
                local_stage(kind, *federation_in(kind, demo, Path(tmp) / f"federation-{kind}.toml",
                                                 args.spark_master))
    finally:
        if started is not None:
            subprocess.run(["bash", str(ROOT / ".ci" / "postgres"), "stop", started])


if __name__ == "__main__":
    main()
