"""Cross-party conditions: what a comparison of two parties' columns costs inside MPC.

    python bench/conditions.py [--persons 5000 20000] [--repeat 3]

A condition on one party's columns runs in that party's DuckDB; one that compares two
parties' columns (``c.year >= p.diagnosis_year``) is a secure comparison per joined row.
Times the same join without a condition, with the condition in FILTER, in WHERE and in a
CASE, on the embedded 3-party federation (median of ``--repeat`` warm runs, each checked
against plain DuckDB), and writes the table to its own section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from scale import write_section
from sqlmpc.catalog import load_federation
from sqlmpc.demo import generate
from sqlmpc.local.data import open_union_database
from sqlmpc.party.embedded import EmbeddedFederation

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Cross-party conditions (issue 27)"
JOIN = "FROM insurer.claims c JOIN hospital.patients p ON p.pid = c.pid"
QUERIES = {
    "no condition": f"SELECT p.diagnosis, COUNT(*) AS n {JOIN} GROUP BY p.diagnosis",
    "in FILTER": f"SELECT p.diagnosis, COUNT(*) FILTER (WHERE c.year >= p.diagnosis_year) AS n {JOIN} "
                 "GROUP BY p.diagnosis",
    "in WHERE": f"SELECT p.diagnosis, COUNT(*) AS n {JOIN} WHERE c.year >= p.diagnosis_year GROUP BY p.diagnosis",
    "in CASE": f"SELECT p.diagnosis, SUM(CASE WHEN c.year >= p.diagnosis_year THEN c.cost_eur ELSE 0 END) AS n "
               f"{JOIN} GROUP BY p.diagnosis",
}


def measure(persons: int, repeat: int) -> dict[str, tuple[float, int]]:
    """Per query: (median seconds, joined rows)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        fed = load_federation(generate(Path(tmp) / "demo", persons=persons, perturbation="none"))
        plain = open_union_database(fed)
        rows = plain.execute(f"SELECT COUNT(*) {JOIN}").fetchone()[0]
        with EmbeddedFederation(fed, timeout=3600) as embedded:
            for name, sql in QUERIES.items():
                embedded.query(sql)                                  # warm-up
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    result = embedded.query(sql)
                    times.append(time.perf_counter() - started)
                want = dict(plain.execute(sql).fetchall())
                for (diagnosis, value), hidden in zip(result.rows(), result.suppressed):
                    assert hidden or abs(float(value) - float(want[diagnosis])) < 1e-6, (name, diagnosis)
                out[name] = (statistics.median(times), rows)
                print(f"{persons:,} persons, {name}: {out[name][0]:.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, nargs="*", default=[5_000, 20_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--notes", default="", help="text put under the table (the machine, what else ran)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    results = {p: measure(p, args.repeat) for p in args.persons}
    lines = [SECTION, "",
             "`python bench/conditions.py`: the claims × patients join grouped by diagnosis, without a condition and "
             "with `c.year >= p.diagnosis_year` (a secure comparison per joined row, at the bit length the declared "
             "ranges need) in FILTER, WHERE and CASE; median of warm runs on the embedded federation, each equal "
             "to plain DuckDB.", "",
             "| persons | joined rows | " + " | ".join(QUERIES) + " | condition ÷ none |",
             "|---|---|" + "---|" * len(QUERIES) + "---|"]
    for persons, r in results.items():
        base = r["no condition"][0]
        worst = max(r[name][0] for name in QUERIES if name != "no condition")
        lines.append(f"| {persons:,} | {r['no condition'][1]:,} | "
                     + " | ".join(f"{r[name][0]:.2f} s" for name in QUERIES) + f" | {worst / base:.1f}× |")
    if args.notes:
        lines += ["", args.notes]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_section(text, Path(args.out))


if __name__ == "__main__":
    main()
