"""The interactive shell, in the spirit of the DuckDB and sqlite3 shells."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sqlmpc import errors

KEYWORDS = ["SELECT", "FROM", "WHERE", "GROUP BY", "HAVING", "ORDER BY", "LIMIT", "JOIN", "LEFT JOIN",
            "ON", "AS", "AND", "OR", "NOT", "IN", "BETWEEN", "IS NULL", "IS NOT NULL", "CASE", "WHEN",
            "THEN", "ELSE", "END", "UNION ALL", "FILTER", "DISTINCT", "COUNT", "SUM", "AVG", "MIN", "MAX",
            "STDDEV_SAMP", "STDDEV_POP", "VAR_SAMP", "VAR_POP", "CORR", "COVAR_POP", "COVAR_SAMP",
            "REGR_SLOPE", "REGR_INTERCEPT", "REGR_R2", "WIDTH_BUCKET", "EXPLAIN", "SHOW TABLES",
            "SHOW POLICY", "DESCRIBE"]

HELP = """\
.help                 this help
.tables               the federation's tables
.schema [party.table] columns, roles and domains
.explain SQL          the plan of a query (local SQL per party, secure part, leakage)
.timer on|off         show how long each query takes
.mode table|csv|json|markdown
.output [FILE]        send results to FILE (no FILE: back to the screen)
.read FILE            run the statements in FILE
.quit                 leave
Statements end with ';'.  Suppressed cells (fewer than k persons) show as ·"""


class Shell:
    def __init__(self, connection, out=sys.stdout):
        self.con = connection
        self.fed = connection.federation
        self.mode = "table"
        self.timer = False
        self.out = out

    def words(self) -> list[str]:
        words = list(KEYWORDS)
        for t in self.fed.tables:
            words.append(f"{t.party}.{t.name}")
            words += [c.name for c in t.columns]
        return sorted(set(words), key=str.lower)

    def tables(self) -> str:
        return "\n".join(f"{t.party}.{t.name}" for t in self.fed.tables)

    def schema(self, name: str | None) -> str:
        lines = []
        for t in self.fed.tables:
            if name and name.lower() != f"{t.party}.{t.name}".lower():
                continue
            lines.append(f"{t.party}.{t.name}")
            for c in t.columns:
                detail = {"key": c.key_space, "dimension": ", ".join(map(str, c.domain or ())),
                          "measure": f"[{c.range[0]}, {c.range[1]}]" if c.range else ""}.get(c.role.value, "")
                lines.append(f"  {c.name:<16} {c.type:<8} {c.role.value:<10} {detail}")
        return "\n".join(lines) or f"no table {name}"

    def command(self, line: str) -> bool:
        """Run a dot command; False means quit."""
        cmd, _, arg = line.strip().partition(" ")
        arg = arg.strip().rstrip(";")
        if cmd in (".quit", ".exit"):
            return False
        if cmd == ".help":
            self.print(HELP)
        elif cmd == ".tables":
            self.print(self.tables())
        elif cmd == ".schema":
            self.print(self.schema(arg or None))
        elif cmd == ".explain":
            from sqlmpc.party.node import plan_for
            from sqlmpc.plan.explain import explain
            self.guard(lambda: self.print(explain(plan_for(self.fed, arg))))
        elif cmd == ".timer":
            self.timer = arg.lower() == "on"
        elif cmd == ".mode":
            if arg not in ("table", "csv", "json", "markdown"):
                self.print("modes: table csv json markdown")
            else:
                self.mode = arg
        elif cmd == ".output":
            if self.out is not sys.stdout:
                self.out.close()
            self.out = open(arg, "w") if arg else sys.stdout
        elif cmd == ".read":
            from sqlmpc.cli.main import _statements
            for sql in _statements(Path(arg).read_text()):
                self.sql(sql)
        else:
            self.print(f"unknown command {cmd}; try .help")
        return True

    def print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def guard(self, fn) -> None:
        try:
            fn()
        except errors.Error as exc:
            self.print(f"Error: {exc}")

    def sql(self, text: str) -> None:
        from sqlmpc.output import render

        def run():
            started = time.perf_counter()
            result = self.con.run(text)
            render(result, self.mode, self.out)
            if self.timer:
                self.print(f"Run Time: {time.perf_counter() - started:.3f} s")
        try:
            self.guard(run)
        except KeyboardInterrupt:
            self.print("cancelled")


def repl(args) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    import sqlmpc

    print("sqlmpc — federated SQL over MPC. Starting the parties ...", flush=True)
    with sqlmpc.connect(args.federation, oracle=args.oracle, persons=args.persons) as con:
        shell = Shell(con)
        names = ", ".join(p.name for p in con.federation.parties)
        print(f"Connected to federation '{con.federation.name}' ({names}); k = "
              f"{con.federation.policy.min_cell_size}. Enter .help for help.")
        history = Path.home() / ".sqlmpc_history"
        session = PromptSession(history=FileHistory(str(history)), lexer=PygmentsLexer(SqlLexer),
                                completer=WordCompleter(shell.words(), ignore_case=True, sentence=True))
        buffer = ""
        while True:
            try:
                line = session.prompt("sqlmpc> " if not buffer else "   ...> ")
            except KeyboardInterrupt:
                buffer = ""
                continue
            except EOFError:
                return 0
            if not buffer and line.strip().startswith("."):
                if not shell.command(line):
                    return 0
                continue
            buffer += line + "\n"
            if buffer.strip().endswith(";"):
                shell.sql(buffer.strip().rstrip(";"))
                buffer = ""
