"""What the release rules cost: app_effectiveness at N persons, with the analyst's filters pushed
to the parties (local WHERE, inputs padded to a size bucket) and, for comparison, with the same
filters evaluated as secret 0/1 flags inside MPC (every row enters; nothing about sizes is opened).

    python bench/release_rules.py [--persons 100000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sqlmpc.catalog import load_federation
from sqlmpc.demo import generate
from sqlmpc.party.embedded import EmbeddedFederation

ROOT = Path(__file__).resolve().parent.parent
PUSHED = (ROOT / "queries" / "app_effectiveness.sql").read_text()
FLAG = "p.diagnosis = 'IBD' AND c.year = 2024"
FLAGGED = f"""SELECT b.age_band, CASE WHEN u.pid IS NULL THEN 'no app' ELSE 'app' END AS app_use,
       COUNT(DISTINCT p.pid) FILTER (WHERE {FLAG}) AS patients,
       SUM(c.cost_eur) FILTER (WHERE {FLAG}) AS total_cost_eur,
       AVG(c.cost_eur) FILTER (WHERE {FLAG}) AS avg_claim_eur
FROM hospital.patients p LEFT JOIN hospital.app_usage u ON u.pid = p.pid
JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid
GROUP BY b.age_band, app_use"""


def timed(embedded, sql: str, repeat: int) -> tuple[float, dict]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        embedded.query(sql)
        times.append(time.perf_counter() - started)
    return statistics.median(times), next(iter(embedded.last_stats.values()))["timings"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fed = load_federation(generate(Path(tmp) / "demo", persons=args.persons))
        with EmbeddedFederation(fed, timeout=3600) as embedded:
            for name, sql in [("filters pushed, inputs padded", PUSHED), ("filters as secret flags", FLAGGED)]:
                seconds, stages = timed(embedded, sql, args.repeat)
                print(f"| {name} | {args.persons:,} | {seconds:.2f} | "
                      + " / ".join(f"{k} {v:.2f}" for k, v in stages.items()) + " |", flush=True)


if __name__ == "__main__":
    main()
