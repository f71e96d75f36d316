"""Bench mode of the differential tester (tests/differential.py): thousands of generated queries.

Every query is checked against the oracle and the independent DuckDB expectation; ``--secure N``
also runs N of them (spread over the run) through the embedded 3-party federation.  Each failure
is printed with a shrunk reproduction; the counts go into BENCHMARKS.md under their own section.

    python bench/differential.py --n 3000 --seed 1 --secure 100
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import differential  # noqa: E402 - the tester lives with the tests

SECTION = "## Differential testing of the dialect (issue 13)"
INTRO = """Generated queries (tests/differential.py) over small random 3-party federations (150-300
persons, NULLs, duplicate keys, bound values, sometimes an empty table; k from 1 to 10; no
dominance rule): every aggregate and scalar function, arithmetic over aggregate outputs, CASE and
WIDTH_BUCKET binning, FILTER, HAVING, INNER/LEFT joins of 1-3 tables, UNION ALL, ORDER BY/LIMIT,
parameters, literals inside and outside the domains. Each must be refused before any party works
with a ProgrammingError subclass, or equal both the oracle and an independent expectation (plain
DuckDB on all data plus the release rules of docs/secure-execution.md §3, re-implemented in the
tester); a sample also runs through the embedded federation. CI: tests/test_differential.py.

| run | generated | agreed | of which also secure | refused | failed | time |
|---|---|---|---|---|---|---|
"""


def record(path: Path, row: str, refused_line: str) -> None:
    """Add a row to this section's table (creating the section), leaving the other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION not in text:
        text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + INTRO + "\nRefusals of the last run: \n"
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    end = len(text) if end < 0 else end + 1
    section = text[start:end]
    table_end = section.index("\n\nRefusals of the last run:")
    section = section[:table_end] + "\n" + row + section[table_end:]
    section = re.sub(r"Refusals of the last run:[^\n]*", lambda _: "Refusals of the last run: " + refused_line,
                     section).rstrip("\n") + "\n"
    path.write_text(text[:start] + section + ("\n" + text[end:].lstrip("\n") if text[end:].strip() else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="generated queries")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--secure", type=int, default=100, help="of them also through the embedded federation")
    ap.add_argument("--per-world", type=int, default=50, help="queries per random federation")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="'' to record nothing")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runner = differential.Runner(Path(tmp), args.seed, args.per_world)
        cases = runner.run(args.n, args.secure)
    seconds = time.perf_counter() - start
    counts = differential.summary(cases)
    refused = counts["refused"]
    print(f"seed {args.seed}: {counts['generated']} generated, {counts['agreed']} agreed "
          f"({counts['agreed (also secure)']} also through the secure engine), {sum(refused.values())} refused, "
          f"{counts['failed']} failed, {seconds:.0f} s")
    refused_line = ", ".join(f"{name} {n}" for name, n in refused.items()) + "."
    print("refused: " + refused_line)
    if args.out:
        row = (f"| bench (seed {args.seed}, {args.secure} secure) | {counts['generated']:,} | {counts['agreed']:,} | "
               f"{counts['agreed (also secure)']} | {sum(refused.values()):,} | {counts['failed']} | {seconds:.0f} s |")
        record(Path(args.out), row, refused_line)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
