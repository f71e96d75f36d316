"""python -m sqlmpc.demo --persons N --seed S --out DIR: write the demo federation, print its TOML path."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sqlmpc.demo.generate import generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sqlmpc.demo", description=__doc__)
    parser.add_argument("--persons", type=int, default=5000, help="number of persons (default 5000)")
    parser.add_argument("--seed", type=int, default=20241, help="random seed (default 20241)")
    parser.add_argument("--min-cell-size", type=int, default=10, help="k written into the policy (default 10)")
    parser.add_argument("--out", required=True, help="directory to write the federation into")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    path = generate(Path(args.out), persons=args.persons, seed=args.seed, min_cell_size=args.min_cell_size)
    print(path)
    print(f"generated {args.persons:,} persons in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
