"""The ``sqlmpc`` command.

    sqlmpc                          embedded demo federation, interactive
    sqlmpc -c "SQL" [--format F]    run one statement and print the result
    sqlmpc -f FILE                  run a script (statements and dot commands); also: sqlmpc < FILE
    sqlmpc explain "SQL"            the plan: local SQL per party, secure part, leakage
    sqlmpc run [--check] FILE...    run saved queries (compare with FILE.expected.csv)
    sqlmpc demo [--persons N]       generate the demo federation's data
    sqlmpc serve --federation F --party P [--policy L] [--keys DIR | --insecure-loopback]
                                    run a party node (Arrow Flight control, MPyC data plane)
    sqlmpc keys init --federation F --out DIR
                                    development CA, party certificates, analyst tokens
    sqlmpc keys rotate-record-key --federation F [--party P --state DIR]
                                    a new share of the record key: every cell's perturbation changes
    sqlmpc approve FILE.sql...      the approved_plans lines that release saved queries exactly
    sqlmpc --connect URL -c "SQL"   run a query at a party node (sqlmpc://host:port, --token, --ca)
    sqlmpc status --connect URL     parties reachable, versions, catalog fingerprints
    sqlmpc pg --port P [--insecure-loopback | --tokens T --cert C --key K]
                                    PostgreSQL wire protocol front end (psql, psycopg, BI tools)
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.check import run_files
from sqlmpc.cli.approve import approve_lines
from sqlmpc.cli.connect import open_connection, token_of
from sqlmpc.cli.repl import Shell, repl
from sqlmpc.demo import generate
from sqlmpc.mpc.record_keys import party_state, rotate_share
from sqlmpc.party.client import RemoteConnection, format_status
from sqlmpc.party.embedded import demo_federation_path
from sqlmpc.plan.compile import compile
from sqlmpc.plan.explain import explain


def _version() -> str:
    try:
        return version("sqlmpc")
    except PackageNotFoundError:
        return "unknown (not installed)"


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a bad one is a usage error before anything starts)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _federation(args):
    return load_federation(Path(args.federation) if args.federation else demo_federation_path(args.persons))


def cmd_explain(args) -> int:
    print(explain(compile(_read_sql(args.sql), _federation(args))))
    return 0


def _read_sql(text: str) -> str:
    path = Path(text)
    if text.endswith(".sql") and path.exists():
        return path.read_text()
    return text


def cmd_run(args) -> int:
    return run_files(args, _federation(args))


def cmd_demo(args) -> int:
    started = time.perf_counter()
    path = generate(Path(args.out), persons=args.persons, seed=args.seed)
    print(f"{path}  ({args.persons} persons, {time.perf_counter() - started:.1f} s)")
    return 0


DRY_RUN = ("DRY RUN: --oracle computes in the clear on all parties' data in one process. "
           "No privacy: use it on synthetic data only.")


def cmd_query(args) -> int:
    """``-c SQL`` or a script on stdin (SQL statements and dot commands, as in the shell)."""
    script = None if args.command else _script(args.file) if args.file else sys.stdin.read()
    with open_connection(args) as con:
        shell = Shell(con, stop_on_error=True)
        shell.mode = args.format
        if args.command:
            shell.sql(args.command)
        else:
            shell.script(script)
    return 0


class ScriptFileError(errors.InterfaceError):
    """The file given to ``-f`` cannot be read, or is a federation file."""


def _script(name: str) -> str:
    if name.endswith(".toml"):
        raise ScriptFileError(f"-f runs a script of statements; to use the federation {name}, "
                              f"give --federation {name}")
    try:
        return Path(name).read_text()
    except OSError as exc:
        raise ScriptFileError(f"cannot read {name}: {exc.strerror}") from None


def cmd_serve(args) -> int:
    from sqlmpc.party.server import serve       # lazy: the node's MPC stack (MPyC) costs ~440 ms at start-up

    if not args.federation:
        raise errors.InterfaceError("sqlmpc serve needs --federation FILE")
    return serve(args)


def cmd_keys(args) -> int:
    if not args.federation:
        raise errors.InterfaceError(f"sqlmpc keys {args.action} needs --federation FILE")
    fed = load_federation(args.federation)
    if args.action == "rotate-record-key":
        parties = [args.party] if args.party else list(fed.party_names)
        for party in parties:
            state = Path(args.state) if args.state else party_state(fed.path, party)
            print(f"{party}: new share of the federation's record key in {rotate_share(state)}")
        print("every person's record key (and so every released cell's noise) has changed")
        return 0
    if not args.out:
        raise errors.InterfaceError("sqlmpc keys init needs --out DIR")
    from sqlmpc.party.keys import init_keys     # lazy: cryptography costs ~95 ms at start-up

    tokens = init_keys(fed, args.out, analysts=args.analyst or None)
    print(f"{args.out}: CA, certificates for {', '.join(fed.party_names)}; tokens for {', '.join(tokens)} "
          f"in {Path(args.out) / 'analysts'}")
    if fed.policy.perturbation == "none":
        print('note: this federation releases exactly (perturbation = "none"), which is open to differencing; '
              'perturbation = "cell_key" under [policy] defends against it (docs/disclosure.md)', file=sys.stderr)
    return 0


def cmd_approve(args) -> int:
    federation = _federation(args)
    print(f"# under [policy] in {federation.path}: these plans are released exactly (all release rules apply)")
    print(approve_lines(args.files, federation))
    return 0


def cmd_status(args) -> int:
    if not args.connect:
        raise errors.InterfaceError("sqlmpc status needs --connect URL")
    remote = RemoteConnection(args.connect, token=token_of(args), ca=args.ca)
    try:
        status = remote.status()
    finally:
        remote.close()
    print(format_status(status))
    return 0 if all(p.get("reachable") for p in status["parties"].values()) else 1


def cmd_pg(args) -> int:
    try:
        from sqlmpc.pg.server import serve      # lazy: an optional extra, and it may be missing
    except ImportError as exc:
        raise errors.InterfaceError(f"sqlmpc pg needs the [pg] extra ({exc.name} is missing): "
                                    "pip install 'sqlmpc[pg]'") from None

    with open_connection(args) as con:
        return serve(args, con)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sqlmpc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sqlmpc {_version()}")
    parser.add_argument("--federation", help="federation TOML (default: the embedded demo)")
    parser.add_argument("-f", "--file", help="run the statements and dot commands in FILE and exit (as psql -f)")
    parser.add_argument("--persons", type=int, default=5000, help="demo size in persons (default 5000)")
    parser.add_argument("--oracle", action="store_true",
                        help="DRY RUN: run in the clear on all data in one process (no privacy)")
    parser.add_argument("-c", "--command", help="run one SQL statement and exit")
    parser.add_argument("--format", default="table", choices=["table", "csv", "json", "markdown"])
    parser.add_argument("--connect", help="a party node: sqlmpc://host:port (sqlmpc+insecure:// for loopback)")
    parser.add_argument("--token", help="analyst bearer token (or $SQLMPC_TOKEN)")
    parser.add_argument("--token-file", help="file holding the analyst token")
    parser.add_argument("--ca", help="CA certificate that signed the node's certificate (or $SQLMPC_CA)")
    sub = parser.add_subparsers(dest="cmd")
    p = sub.add_parser("explain", help="show the plan of a query")
    p.add_argument("sql")
    p.set_defaults(func=cmd_explain)
    p = sub.add_parser("run", help="run saved .sql files",
                       epilog="exit codes: 0 every query ran (and matched its expected result), "
                              "1 a query failed, differed or is missing, 2 bad command line")
    p.add_argument("files", nargs="+")
    p.add_argument("--check", action="store_true", help="compare with FILE.expected.csv; exit 1 on a difference")
    p.add_argument("--write-expected", action="store_true", help="(re)write FILE.expected.csv")
    p.add_argument("--out", help="directory for the results")
    p.add_argument("--format", choices=["csv", "json", "markdown", "parquet", "arrow"], default=argparse.SUPPRESS,
                   help="format of the files written to --out (default csv)")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (one test case per query)")
    p.add_argument("--report", metavar="FILE", help="write one self-contained HTML page: a table and a chart per query")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("demo", help="generate the demo federation")
    p.add_argument("--persons", type=int, default=argparse.SUPPRESS, help="size in persons (default 5000)")
    p.add_argument("--out", default="demo-data")
    p.add_argument("--seed", type=int, default=20241)
    p.set_defaults(func=cmd_demo)
    def common(p, *names):
        # Options of the main parser, also accepted after the subcommand.
        helps = {"--federation": "federation TOML", "--connect": "sqlmpc://host:port", "--token": "analyst token",
                 "--token-file": "file holding the analyst token", "--ca": "CA certificate"}
        for name in names:
            p.add_argument(name, default=argparse.SUPPRESS, help=helps[name])

    p = sub.add_parser("serve", help="run a party node")
    common(p, "--federation")
    p.add_argument("--party", required=True)
    p.add_argument("--policy", help="this party's own local file (TOML): a [policy] only stricter than the "
                   "federation's; its private settings [data] dir, [postgresql], [spark]")
    p.add_argument("--keys", help="directory from 'sqlmpc keys init' (TLS and analyst tokens)")
    p.add_argument("--tokens", help="analyst tokens file (default: KEYS/tokens.json)")
    p.add_argument("--insecure-loopback", action="store_true",
                   help="no TLS, no certificates: bind 127.0.0.1 only (development)")
    p.add_argument("--bind", default="0.0.0.0", help="interface to listen on (default all; loopback if insecure)")
    p.add_argument("--analyst-port", type=int, help="analyst endpoint port (default: address port + 1)")
    p.add_argument("--mpc-port", type=int,
                   help="first of the MPC data plane ports (16 per worker) used in turn, one per query and "
                        "worker (default: address port + 2)")
    p.add_argument("--state", help="state directory with the audit log (default ./sqlmpc-state/PARTY)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a silent party fails a query")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="processes for this party's share of the secure stages (default: the party's "
                        "'workers' in the federation file, else 1)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("keys", help="key material for a federation")
    common(p, "--federation")
    p.add_argument("action", choices=["init", "rotate-record-key"],
                   help="init: CA, certificates, tokens; rotate-record-key: a new share of the federation's "
                        "record key (every person's record key changes)")
    p.add_argument("--out", help="init: directory for the key material")
    p.add_argument("--party", help="rotate-record-key: this party's share only (default: every party's, embedded)")
    p.add_argument("--state", help="rotate-record-key: the party's state directory (as 'serve --state')")
    p.add_argument("--analyst", action="append", help="analyst name (repeatable; default: the policy's or 'analyst')")
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("approve", help="print the approved_plans lines that release saved queries exactly")
    common(p, "--federation")
    p.add_argument("files", nargs="+", help=".sql files (every statement in each)")
    p.set_defaults(func=cmd_approve)
    p = sub.add_parser("status", help="parties reachable, versions, catalog fingerprints")
    common(p, "--connect", "--token", "--token-file", "--ca")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("pg", help="serve the federation to PostgreSQL clients (psql, psycopg, BI tools)")
    common(p, "--federation", "--connect", "--token", "--token-file", "--ca")
    p.add_argument("--port", type=int, default=5432, help="port to listen on (default 5432)")
    p.add_argument("--bind", default="0.0.0.0", help="interface to listen on (default all; loopback if insecure)")
    p.add_argument("--tokens", help="analyst tokens (keys/tokens.json): the password is the analyst's token")
    p.add_argument("--cert", help="TLS certificate (PEM) clients verify")
    p.add_argument("--key", help="TLS private key (PEM)")
    p.add_argument("--insecure-loopback", action="store_true",
                   help="no TLS, no password: bind 127.0.0.1 only (demos)")
    p.add_argument("--state", help="directory of the audit log of failed logins (default: the federation's "
                                   "state directory, ./sqlmpc-state with --connect)")
    p.set_defaults(func=cmd_pg)
    args = parser.parse_args(argv)
    if args.oracle:
        print(DRY_RUN, file=sys.stderr)
    try:
        if getattr(args, "func", None):
            return args.func(args)
        if args.command or args.file or not sys.stdin.isatty():
            return cmd_query(args)
        return repl(args)
    except errors.Error as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
