"""What cell-key perturbation costs and how far it moves released cells (docs/disclosure.md).

The same demo data twice, once with ``perturbation = "none"`` and once with ``"cell_key"``; each
ad-hoc query runs through the embedded federation on both (time: median of --repeat), and the
perturbed cells of a three-way grouping are compared with the exact ones by cell size.  Writes
its own section of BENCHMARKS.md (the file's other sections are kept).

    python bench/perturbation.py [--persons 5000] [--repeat 1] [--no-write]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from sqlmpc.catalog import load_federation
from sqlmpc.demo import generate
from sqlmpc.local.data import open_union_database
from sqlmpc.oracle import run_oracle
from sqlmpc.party.embedded import EmbeddedFederation

ROOT = Path(__file__).resolve().parent.parent
TITLE = "## Cell-key perturbation (issue 12)"
JOIN = ("FROM hospital.patients p JOIN insurer.claims c ON c.pid = p.pid JOIN bureau.persons b ON b.pid = p.pid "
        "WHERE c.year = 2024")
QUERIES = [
    ("3-way join, 25 cells: patients, cost, average claim",
     f"SELECT p.diagnosis, b.region, COUNT(DISTINCT p.pid), SUM(c.cost_eur), AVG(c.cost_eur) {JOIN} "
     "GROUP BY p.diagnosis, b.region"),
    ("2-way join, 5 cells: claims, cost, STDDEV",
     "SELECT p.diagnosis, COUNT(*), SUM(c.cost_eur), STDDEV_SAMP(c.cost_eur) "
     "FROM hospital.patients p JOIN insurer.claims c ON c.pid = p.pid GROUP BY p.diagnosis"),
    ("one table, 40 cells: persons by region and age band",
     "SELECT b.region, b.age_band, COUNT(*) FROM bureau.persons b GROUP BY b.region, b.age_band"),
]
GROUPINGS = ["p.diagnosis", "p.diagnosis, b.region", "p.diagnosis, b.region, b.age_band"]
BY_SIZE = [f"SELECT COUNT(DISTINCT p.pid) AS patients, SUM(c.cost_eur) AS cost, {g} {JOIN} GROUP BY {g}"
           for g in GROUPINGS]
# Per cell of each grouping: S2, the sum of the squares of the patients' 2024 costs in cents (the engine's units).
def s2_sql(grouping: str) -> str:
    names = [f"g{i}" for i, _ in enumerate(grouping.split(","))]
    inner = ", ".join(f"{c.strip()} AS {n}" for c, n in zip(grouping.split(","), names))
    return (f"SELECT {', '.join(names)}, SUM(x * x) FROM (SELECT {inner}, p.pid, SUM(round(c.cost_eur * 100)) AS x "
            f"{JOIN} GROUP BY ALL) GROUP BY ALL")


S2 = [s2_sql(g) for g in GROUPINGS]
SIZES = [(10, 19), (20, 49), (50, 99), (100, 199), (200, 499), (500, 10 ** 9)]


def timed(embedded, sql: str, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = embedded.query(sql)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _cell(row) -> str:
    return repr(row[2:])


def noise_scale(s2: int, mu: float) -> float:
    """The documented bound of a sum's noise, in euros: μ·m, m = 2^⌈L/2⌉ for L the bit length of S2 (cents²)."""
    return mu * (1 << -(-int(s2).bit_length() // 2)) / 100


def errors_by_size(perturbed, exact, bounds) -> list[str]:
    """Per cell-size class: cells, mean and largest |relative error| of the count and of the sum, the
    documented bound μ·m of the sum's noise relative to the sum (mean), and the largest |noise| / μ·m."""
    rows = []
    for lo, hi in SIZES:
        cells = [(g, w, b) for g, w, b in zip(perturbed, exact, bounds) if w[0] is not None and lo <= w[0] <= hi]
        if not cells:
            continue
        count = [abs(g[0] - w[0]) / w[0] for g, w, _ in cells]
        total = [abs(g[1] - float(w[1])) / float(w[1]) for g, w, _ in cells]
        bound = [b / float(w[1]) for _, w, b in cells]
        used = [abs(g[1] - float(w[1])) / b for g, w, b in cells]
        label = f"{lo}–{hi}" if hi < 10 ** 9 else f"≥ {lo}"
        rows.append(f"| {label} | {len(cells)} | {100 * statistics.mean(count):.2f} % | {100 * max(count):.2f} % | "
                    f"{100 * statistics.mean(total):.2f} % | {100 * max(total):.2f} % | "
                    f"{100 * statistics.mean(bound):.1f} % | {max(used):.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-write", action="store_true", help="print the section only")
    args = ap.parse_args()
    timing, sizes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        exact_fed = load_federation(generate(Path(tmp) / "none", persons=args.persons, perturbation="none"))
        noisy_fed = load_federation(generate(Path(tmp) / "cell_key", persons=args.persons))
        runs = {}
        for name, fed in (("none", exact_fed), ("cell_key", noisy_fed)):
            with EmbeddedFederation(fed, timeout=3600) as embedded:
                for label, sql in QUERIES:
                    runs[(name, label)] = timed(embedded, sql, args.repeat)[0]
                    print(name, label, f"{runs[(name, label)]:.2f} s", flush=True)
                if name == "cell_key":
                    perturbed = [row for sql in BY_SIZE for row in sorted(embedded.query(sql).rows(), key=_cell)]
        union = open_union_database(noisy_fed)
        exact = [row for sql in BY_SIZE for row in sorted(run_oracle(sql, noisy_fed, union).rows(), key=_cell)]
        s2 = {}
        for sql in S2:
            s2.update({repr(tuple(r[:-1])): r[-1] for r in union.execute(sql).fetchall()})
        mu = noisy_fed.policy.cell_key.magnitude_deviation
        bounds = [noise_scale(s2.get(_cell(w), 0), mu) for w in exact]
        for label, _ in QUERIES:
            before, after = runs[("none", label)], runs[("cell_key", label)]
            timing.append(f"| {label} | {before:.2f} | {after:.2f} | {100 * (after / before - 1):+.0f} % |")
        sizes = errors_by_size(perturbed, exact, bounds)
    section = "\n".join([
        TITLE, "",
        f"`python bench/perturbation.py --persons {args.persons}` ({platform.machine()}, 2 cores shared with other "
        f"work, loopback; median of {args.repeat}): the same ad-hoc queries on the same data with "
        "`perturbation = \"none\"` and `\"cell_key\"`.", "",
        "| query | exact s | perturbed s | overhead |", "|---|---|---|---|", *timing, "",
        "Relative error of released cells by their exact count of persons (COUNT(DISTINCT) patients and "
        "SUM of their 2024 claims, grouped by diagnosis; diagnosis × region; diagnosis × region × age band):", "",
        "| persons in cell | cells | count: mean | count: max | sum: mean | sum: max | sum: bound μ·m (mean) "
        "| largest noise / μ·m |",
        "|---|---|---|---|---|---|---|---|", *sizes, ""])
    print(section)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", section)


def write_section(path: Path, section: str) -> None:
    text = path.read_text()
    if TITLE in text:
        start = text.index(TITLE)
        end = text.find("\n## ", start + len(TITLE))
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
