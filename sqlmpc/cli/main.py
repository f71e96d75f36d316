"""The ``sqlmpc`` command.

    sqlmpc                          embedded demo federation, interactive
    sqlmpc -c "SQL" [--format F]    run one statement and print the result
    sqlmpc explain "SQL"            the plan: local SQL per party, secure part, leakage
    sqlmpc run [--check] FILE...    run saved queries (compare with FILE.expected.csv)
    sqlmpc demo [--persons N]       generate the demo federation's data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlmpc import errors


def _federation(args):
    from sqlmpc.catalog import load_federation
    from sqlmpc.party.embedded import demo_federation_path

    return load_federation(Path(args.federation) if args.federation else demo_federation_path(args.persons))


def cmd_explain(args) -> int:
    from sqlmpc.party.node import plan_for
    from sqlmpc.plan.explain import explain

    sql = _read_sql(args.sql)
    print(explain(plan_for(_federation(args), sql)))
    return 0


def _read_sql(text: str) -> str:
    path = Path(text)
    if text.endswith(".sql") and path.exists():
        return path.read_text()
    return text


def cmd_run(args) -> int:
    from sqlmpc.check import run_files

    return run_files(args, _federation(args))


def cmd_demo(args) -> int:
    import time

    from sqlmpc.demo import generate

    started = time.perf_counter()
    path = generate(Path(args.out), persons=args.persons, seed=args.seed)
    print(f"{path}  ({args.persons} persons, {time.perf_counter() - started:.1f} s)")
    return 0


def cmd_query(args) -> int:
    import sqlmpc
    from sqlmpc.output import render

    fed = args.federation
    with sqlmpc.connect(fed, oracle=args.oracle, persons=args.persons) as con:
        statements = [args.command] if args.command else _statements(sys.stdin.read())
        for sql in statements:
            result = con.run(sql)
            render(result, args.format, sys.stdout)
    return 0


def _statements(text: str) -> list[str]:
    """Split a script on ';' and keep the chunks that hold more than comments."""
    def has_sql(chunk: str) -> bool:
        return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())
    return [chunk.strip() for chunk in text.split(";") if has_sql(chunk)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sqlmpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--federation", "-f", help="federation TOML (default: the embedded demo)")
    parser.add_argument("--persons", type=int, default=5000, help="demo size in persons (default 5000)")
    parser.add_argument("--oracle", action="store_true",
                        help="DRY RUN: run in the clear on all data in one process (no privacy)")
    parser.add_argument("-c", "--command", help="run one SQL statement and exit")
    parser.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    sub = parser.add_subparsers(dest="cmd")
    p = sub.add_parser("explain", help="show the plan of a query")
    p.add_argument("sql")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("run", help="run saved .sql files")
    p.add_argument("files", nargs="+")
    p.add_argument("--check", action="store_true", help="compare with FILE.expected.csv; exit 1 on a difference")
    p.add_argument("--write-expected", action="store_true", help="(re)write FILE.expected.csv")
    p.add_argument("--out", help="directory for results (CSV)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("demo", help="generate the demo federation")
    p.add_argument("--out", default="demo-data")
    p.add_argument("--seed", type=int, default=20241)
    p.set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "func", None):
            return args.func(args)
        if args.command or not sys.stdin.isatty():
            return cmd_query(args)
        from sqlmpc.cli.repl import repl
        return repl(args)
    except errors.Error as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
