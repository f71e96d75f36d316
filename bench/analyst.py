"""Bench mode of the analyst-SQL differential tester (tests/analyst.py): as many generated queries
as the time allows over the demo federation, the oracle for all, the secure engine for a share;
every answer compared cell by cell with plain DuckDB on the raw tables plus the release rules.

    python bench/analyst.py --n 10000 --persons 5000 --secure-share 0.05 --time-limit 2400
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import analyst  # noqa: E402 - the tester lives with the tests


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--persons", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--secure-share", type=float, default=0.05)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds; stop generating after them")
    ap.add_argument("--json", default="", help="write the summary here")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cases = analyst.Runner(Path(tmp), args.seed, args.persons).run(
            args.n, args.secure_share, args.time_limit, progress=100)
    counts = analyst.summary(cases)
    counts["seconds"] = round(time.perf_counter() - start)
    counts["secure slowest s"] = round(max((c.seconds for c in cases if c.verdict.secure), default=0), 2)
    print(json.dumps(counts, indent=1, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(counts, indent=1, default=str))
    return 1 if counts["mismatches"] or counts["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
