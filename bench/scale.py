"""Population scale: the saved app-effectiveness query from 10,000 to 1,000,000 persons.

    python bench/scale.py [--persons 10000 100000 300000 1000000] [--cache DIR] [--workers N]

For each size: the demo federation's local DuckDB work (generation), the query end to
end through the embedded 3-party federation, and per secure stage and party: wall and
CPU seconds, bytes sent, peak memory and the MPyC primitives it ran (elements input,
multiplied and opened, by field size).  The *primitive floor* is the same count of
inputs, multiplications and openings timed alone in a bare 3-party MPyC session of the
same run; plain DuckDB is the same SQL on all data in one process.  Every secure result
is checked against the plaintext oracle.  Writes the section "Population scale" of
BENCHMARKS.md and the plot bench/scale.png (needs the `bench` extra: matplotlib).  With
``--workers N`` every party declares ``workers = N`` and the section is "... with N workers"
(no plot); a party's CPU seconds and bytes then include its worker processes'.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

from bench import plain_duckdb_seconds
from sqlmpc.catalog import load_federation
from sqlmpc.demo import generate
from sqlmpc.mpc.runtime import uniform_below
from sqlmpc.oracle import run_oracle
from sqlmpc.party.embedded import EmbeddedFederation

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from mpc_parties import run_parties  # noqa: E402  (the tests' 3-party launcher, reused for the floor)

QUERY = (ROOT / "queries" / "app_effectiveness.sql").read_text()
STAGES = ["input", "shuffle", "join", "aggregate", "threshold", "reveal"]
SECTION = "## Population scale (issue 14)"
WORKERS_SECTION = "## Population scale with {n} workers per party"


# -- the primitive floor ---------------------------------------------------------------

async def _floor_party(mpc, pid, counts: dict, batch: int):
    """Run counts[(kind, bits)] elements of each primitive, vectorised in batches of random shares
    (made outside the clock), a few batches in flight at once; return (wall, CPU) seconds."""
    wall = cpu = 0.0
    m = len(mpc.parties)
    for (kind, bits), total in sorted(counts.items()):
        if bits < 2 or total == 0:
            continue
        sectype = mpc.SecFld(min_order=1 << (bits - 1))
        size = -(-batch // m) if kind == "inputs" else batch     # every party inputs its part at once
        step = size * (m if kind == "inputs" else 1)
        for lo in range(0, total, 8 * step):
            xs = [sectype.array(sectype.field.array(uniform_below(sectype.field.order, size)))
                  for _ in range(min(8, -(-(total - lo) // step)))]
            started, cpu0 = time.perf_counter(), time.process_time()
            if kind == "inputs":
                await mpc.gather([mpc.input(x, senders=list(range(m))) for x in xs])
            elif kind == "multiplications":
                await mpc.gather([x * x for x in xs])
            else:
                await mpc.gather([mpc.output(x) for x in xs])
            wall += time.perf_counter() - started
            cpu += time.process_time() - cpu0
    return wall, cpu


def primitive_floor(counts: dict, batch: int = 1 << 16) -> tuple[float, float]:
    """(wall seconds of the slowest party, CPU seconds of the busiest) for the bare primitives."""
    results = run_parties(_floor_party, args=(counts, batch), timeout=3600)
    return max(w for w, _ in results), max(c for _, c in results)


def split_key(key: str) -> tuple[str, int]:
    kind, bits = key.split("/")
    return kind, int(bits)


# -- one size ----------------------------------------------------------------------------

def measure(persons: int, cache: Path, workers: int = 1) -> dict:
    started = time.perf_counter()
    path = generate(cache / f"scale-{persons}", persons=persons, perturbation="none")
    generation = time.perf_counter() - started
    if workers > 1:               # a copy beside it (its sources are relative to the file)
        text = re.sub(r'^(address = ".*")$', rf"\1\nworkers = {workers}", path.read_text(), flags=re.M)
        path = path.with_name(f"federation-{workers}-workers.toml")
        path.write_text(text)
    fed = load_federation(path)
    with EmbeddedFederation(fed, timeout=3600) as embedded:
        t0 = time.perf_counter()
        result = embedded.query(QUERY)
        secure = time.perf_counter() - t0
        stats = embedded.last_stats
    oracle = run_oracle(QUERY, fed)
    equal = result.suppressed == oracle.suppressed and all(
        (math.isclose(a, b, rel_tol=1e-9) if isinstance(a, float) else a == b)
        for r1, r2 in zip(result.rows(), oracle.rows()) for a, b in zip(r1, r2))
    plain = plain_duckdb_seconds(fed, QUERY)
    counts: dict = {}
    first = next(iter(stats.values()))
    for stage in first.get("stages", {}).values():
        for key, n in stage.get("primitives", {}).items():
            counts[split_key(key)] = counts.get(split_key(key), 0) + n
    floor, floor_cpu = primitive_floor(counts, fed.batch_rows)
    return {"persons": persons, "generation": generation, "secure": secure, "plain": plain, "floor": floor,
            "floor_cpu": floor_cpu,
            "equal": equal, "stats": stats, "counts": {f"{k}/{b}": n for (k, b), n in counts.items()}}


# -- report ----------------------------------------------------------------------------

def cpu_s(party: dict) -> float:
    """A party's CPU seconds in the secure stages, its worker processes' included."""
    return sum(v["cpu_s"] + v.get("worker_cpu_s", 0.0) for v in party["stages"].values())


def peak_mb(party: dict) -> float:
    """The peak RSS of the party's largest process (the party's own, or one of its workers)."""
    return max([party["max_rss_mb"]] + [v.get("worker_peak_rss_mb", 0.0) for v in party["stages"].values()])


def table(rows: list[dict]) -> str:
    lines = ["| persons | local DuckDB (generate) s | secure s | s per 10⁶ persons | plain DuckDB s | × plain | "
             "CPU s per party | CPU µs per person and party | floor CPU s | × floor (CPU) | floor wall s | "
             "peak MB per party | = oracle |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peaks = " / ".join(f"{peak_mb(s):.0f}" for s in r["stats"].values())
        cpus = [cpu_s(s) for s in r["stats"].values()]
        lines.append(f"| {r['persons']:,} | {r['generation']:.1f} | {r['secure']:.1f} | "
                     f"{r['secure'] / r['persons'] * 1e6:,.0f} | {r['plain']:.3f} | {r['secure'] / r['plain']:,.0f}× | "
                     f"{' / '.join(f'{c:.1f}' for c in cpus)} | {max(cpus) / r['persons'] * 1e6:.0f} | "
                     f"{r['floor_cpu']:.1f} | {max(cpus) / r['floor_cpu']:.1f}× | {r['floor']:.1f} | {peaks} | "
                     f"{'yes' if r['equal'] else 'NO'} |")
    lines += ["", "Per stage and party (wall s / CPU s / MB sent / peak MB):", "",
              "| persons | party | " + " | ".join(STAGES) + " |", "|---|---|" + "---|" * len(STAGES)]
    for r in rows:
        for party, s in r["stats"].items():
            cells = []
            for stage in STAGES:
                v = s["stages"].get(stage)
                cells.append("–" if v is None else
                             f"{v['seconds']:.1f} / {v['cpu_s'] + v.get('worker_cpu_s', 0):.1f} / "
                             f"{(v['bytes_sent'] + v.get('worker_bytes_sent', 0)) / 1e6:.0f} / "
                             f"{max(v['peak_rss_mb'], v.get('worker_peak_rss_mb', 0)):.0f}")
            lines.append(f"| {r['persons']:,} | {party} | " + " | ".join(cells) + " |")
    lines += ["", "Primitives per query (elements at each party, by kind and field bits):", "",
              "| persons | " + " | ".join(["inputs", "multiplications", "openings"]) + " |", "|---|---|---|---|"]
    for r in rows:
        counts = sorted((split_key(key), n) for key, n in r["counts"].items())
        by_kind = {k: ", ".join(f"{n:,}×{b}b" for (kind, b), n in counts if kind == k and b)
                   for k in ("inputs", "multiplications", "openings")}
        lines.append(f"| {r['persons']:,} | {by_kind['inputs']} | {by_kind['multiplications']} | "
                     f"{by_kind['openings']} |")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["persons"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.loglog(n, [r["secure"] for r in rows], "o-", label="secure, end to end")
    ax1.loglog(n, [max(cpu_s(s) for s in r["stats"].values()) for r in rows],
               "o--", label="secure stages, CPU s of the busiest party")
    ax1.loglog(n, [r["floor_cpu"] for r in rows], "s--", label="MPyC primitive floor, CPU s")
    ax1.loglog(n, [r["generation"] for r in rows], "^:", label="local DuckDB (generate)")
    ax1.loglog(n, [rows[0]["secure"] * x / n[0] for x in n], color="grey", lw=0.8, label="linear from the first")
    ax1.set_xlabel("persons")
    ax1.set_ylabel("seconds")
    ax1.legend()
    ax1.grid(True, which="both", alpha=0.3)
    ax2.loglog(n, [max(peak_mb(s) for s in r["stats"].values()) for r in rows], "o-",
               label="largest party's peak RSS")
    ax2.axhline(2500, color="red", lw=0.8, ls="--", label="2,500 MB target")
    ax2.set_xlabel("persons")
    ax2.set_ylabel("MB")
    ax2.legend()
    ax2.grid(True, which="both", alpha=0.3)
    fig.suptitle("app_effectiveness, 3 parties on one 2-core machine")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def write_section(text: str, out: Path) -> None:
    """Put a section (its first line its heading) into ``out``: in place of the section of that
    heading, else at the end."""
    old = out.read_text() if out.exists() else "# Benchmarks\n"
    heading, text = text.splitlines()[0], text.rstrip("\n") + "\n"
    if heading + "\n" in old:
        start = old.index(heading + "\n")
        end = old.find("\n## ", start + 1)
        out.write_text(old[:start] + text + ("\n" + old[end + 1:] if end != -1 else ""))
    else:
        out.write_text(old.rstrip("\n") + "\n\n" + text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, nargs="*", default=[10_000, 100_000, 300_000, 1_000_000])
    ap.add_argument("--cache", default=str(ROOT / ".bench-cache"))
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--plot", default=str(ROOT / "bench" / "scale.png"))
    ap.add_argument("--reuse", action="store_true", help="take sizes measured before from the cache")
    ap.add_argument("--notes", default="", help="text put under the table (what the run shows)")
    ap.add_argument("--workers", type=int, default=1, help="workers = N at every party (default 1)")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for persons in args.persons:
        saved = cache / (f"result-{persons}.json" if args.workers == 1 else f"result-{persons}-w{args.workers}.json")
        if args.reuse and saved.exists():          # a size measured by an earlier run (one size per run)
            rows.append(json.loads(saved.read_text()))
            continue
        rows.append(measure(persons, cache, args.workers))
        saved.write_text(json.dumps(rows[-1]))
        print(table(rows), flush=True)
    text = table(rows)
    if args.workers > 1:
        section = (f"{WORKERS_SECTION.format(n=args.workers)}\n\nRun: `python bench/scale.py --workers "
                   f"{args.workers}`: as above, with `workers = {args.workers}` at every party, so the shuffle's "
                   f"re-inputs and the join tokens run in {args.workers} MPC sessions per party. CPU seconds and MB "
                   f"sent include the worker processes'; peak MB is the party's largest process.\n\n{text}\n")
    else:
        plot(rows, Path(args.plot))
        section = (f"{SECTION}\n\nRun: `python bench/scale.py` (the `bench` extra draws bench/scale.png). "
                   f"The saved query queries/app_effectiveness.sql, 3 parties as local processes on one machine "
                   f"(2 cores shared by all three), batch_rows = default. Secure s is end to end (policy, local "
                   f"parts, MPC, release); the stage table is each party's own view (MPyC evaluates lazily: work "
                   f"is counted in the stage that first waits for it). × floor compares the busiest party's CPU "
                   f"seconds in the secure stages with the CPU seconds of the bare MPyC primitives the plan ran "
                   f"(the same counts by kind and field size, vectorised, in a bare 3-party session); CPU "
                   f"seconds, unlike wall seconds, do not depend on what else shares the cores.\n\n{text}\n\n"
                   f"![time and memory against persons](bench/scale.png)\n")
    if args.notes:
        section += "\n" + args.notes.strip() + "\n"
    write_section(section, Path(args.out))
    print(f"wrote {args.out}" + ("" if args.workers > 1 else f" and {args.plot}"))


if __name__ == "__main__":
    main()
