"""The interactive shell, in the spirit of the DuckDB and sqlite3 shells.

Statements may span lines and end with ';'.  Tab completes keywords, parties,
``party.`` + table names, column names and ``alias.`` + column names.  History
persists in ``$SQLMPC_HISTORY`` (default ``~/.sqlmpc_history``).  Ctrl-C clears
the current input; during a query it cancels it (the embedded parties restart).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

from sqlmpc import errors
from sqlmpc.cli.connect import open_connection
from sqlmpc.cli.progress import StageProgress
from sqlmpc.output import render
from sqlmpc.sql.script import split_script, statements

KEYWORDS = ["SELECT", "FROM", "WHERE", "GROUP BY", "HAVING", "ORDER BY", "LIMIT", "OFFSET", "JOIN",
            "LEFT JOIN", "INNER JOIN", "ON", "AS", "AND", "OR", "NOT", "IN", "BETWEEN", "LIKE", "IS NULL",
            "IS NOT NULL", "CASE", "WHEN", "THEN", "ELSE", "END", "UNION ALL", "FILTER", "DISTINCT", "ASC",
            "DESC", "COUNT", "SUM", "AVG", "MIN", "MAX", "STDDEV_SAMP", "STDDEV_POP", "VAR_SAMP", "VAR_POP",
            "CORR", "COVAR_POP", "COVAR_SAMP", "REGR_SLOPE", "REGR_INTERCEPT", "REGR_R2", "WIDTH_BUCKET",
            "EXPLAIN", "SHOW TABLES", "SHOW POLICY", "DESCRIBE"]
DOT_COMMANDS = [".help", ".tables", ".schema", ".explain", ".timer", ".mode", ".output", ".read", ".quit"]
MODES = ("table", "csv", "json", "markdown")

HELP = """\
.help                 this help
.tables               the federation's tables
.schema [party.table] columns, roles and domains
.explain SQL          the plan of a query (local SQL per party, secure part, leakage)
.timer on|off         show how long each query takes
.mode table|csv|json|markdown
.output [FILE]        send results to FILE (no FILE: back to the screen)
.read FILE            run the statements in FILE
.quit                 leave (or Ctrl-D)
Statements end with ';' and may span lines.  Tab completes names.  Ctrl-C clears
the input or cancels a running query.  A suppressed cell (fewer than k persons, a dominant
contributor, or protecting another cell) shows as ·"""

class UnknownCommandError(errors.InterfaceError):
    """A line starting with '.' that is not one of the shell's dot commands."""


_ALIAS = re.compile(r"\b(\w+)\.(\w+)(?:\s+(?:AS\s+)?(\w+))?", re.IGNORECASE)


def history_path() -> Path:
    return Path(os.environ.get("SQLMPC_HISTORY") or Path.home() / ".sqlmpc_history")


def make_completer(federation, pending=lambda: ""):
    """A prompt_toolkit completer for the federation's names.

    ``pending()`` returns the earlier lines of an unfinished statement, so that
    ``alias.`` completes with aliases defined on earlier lines too.
    """
    from prompt_toolkit.completion import Completer, Completion     # lazy: prompt_toolkit costs ~150 ms at start-up

    tables = {(t.party.lower(), t.name.lower()): t for t in federation.tables}
    parties = [p.name for p in federation.parties]
    columns = sorted({c.name for t in federation.tables for c in t.columns})

    def aliases(text: str) -> dict[str, object]:
        """alias -> table for every ``party.table [AS] alias`` (and ``party.table``) in the text."""
        found = {}
        for party, name, alias in _ALIAS.findall(text):
            table = tables.get((party.lower(), name.lower()))
            if table is not None:
                found[name.lower()] = table
                if alias and alias.upper() not in KEYWORDS + ["JOIN", "WHERE", "ON", "GROUP", "LEFT"]:
                    found[alias.lower()] = table
        return found

    class SqlCompleter(Completer):
        def get_completions(self, document, complete_event):
            word = document.get_word_before_cursor(pattern=re.compile(r"[\w.]+"))
            text = document.text
            if not pending().strip() and text.lstrip().startswith(".") and " " not in text.lstrip():
                candidates = DOT_COMMANDS
            elif "." in word:
                head, _, tail = word.rpartition(".")
                head_l = head.lower()
                if head_l in (p.lower() for p in parties):
                    candidates = [f"{head}.{t.name}" for t in federation.tables if t.party.lower() == head_l]
                else:
                    table = aliases(pending() + " " + text).get(head_l)
                    candidates = [f"{head}.{c.name}" for c in table.columns] if table else []
            else:
                candidates = KEYWORDS + parties + columns
            lower = word.lower()
            for c in candidates:
                if c.lower().startswith(lower) and c.lower() != lower:
                    yield Completion(c, start_position=-len(word))

    return SqlCompleter()


class Shell:
    """The shell's state and commands, independent of the terminal (used by the REPL and tests)."""

    def __init__(self, connection, out=sys.stdout, interactive: bool = False, stop_on_error: bool = False):
        self.con = connection
        self.stop_on_error = stop_on_error
        self.fed = connection.federation
        self.mode = "table"
        self.timer = False
        self.out = out
        self.interactive = interactive

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
                lines.append(f"  {c.name:<16} {c.type:<8} {c.role.value:<10} {detail or ''}")
        return "\n".join(lines) or f"no table {name}; .tables lists them"

    def command(self, line: str) -> bool:
        """Run a dot command; False means quit."""
        cmd, _, arg = line.strip().partition(" ")
        arg = arg.strip().rstrip(";").strip()
        if cmd in (".quit", ".exit", ".q"):
            return False
        if cmd == ".help":
            self.print(HELP)
        elif cmd == ".tables":
            self.print(self.tables())
        elif cmd == ".schema":
            self.print(self.schema(arg or None))
        elif cmd == ".explain":
            self.guard(lambda: self.print("\n".join(r[0] for r in self.con.run("EXPLAIN " + arg).rows())))
        elif cmd == ".timer":
            if arg.lower() not in ("on", "off"):
                self.print(f"timer is {'on' if self.timer else 'off'}; .timer on|off")
            else:
                self.timer = arg.lower() == "on"
        elif cmd == ".mode":
            if arg not in MODES:
                self.print(f"mode is {self.mode}; modes: {' '.join(MODES)}")
            else:
                self.mode = arg
        elif cmd == ".output":
            if self.out is not sys.stdout:
                self.out.close()
            self.out = open(arg, "w") if arg else sys.stdout
        elif cmd == ".read":
            try:
                text = Path(arg).read_text()
            except OSError as exc:
                self.print(f"Error: cannot read {arg}: {exc.strerror}")
                return True
            return self.script(text)
        else:
            if self.stop_on_error:
                raise UnknownCommandError(f"unknown command {cmd}; dot commands: {' '.join(DOT_COMMANDS)}")
            self.print(f"unknown command {cmd}; try .help")
        return True

    def print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def guard(self, fn) -> None:
        if self.stop_on_error:          # a piped script: the first error ends it (exit code 1)
            fn()
            return
        try:
            fn()
        except errors.Error as exc:
            self.print(f"Error: {exc}")

    def script(self, text: str) -> bool:
        """Run a script: dot commands on lines of their own, SQL statements ended by ';'.

        A last statement without ';' runs too.  False when the script ran ``.quit``.
        """
        buffer = ""
        for line in text.splitlines(keepends=True):
            if not buffer.strip() and line.strip().startswith("."):
                if not self.command(line):
                    return False
                continue
            done, buffer = split_complete(buffer + line)
            for sql in done:
                self.sql(sql)
        for sql in statements(buffer):
            self.sql(sql)
        return True

    def _run(self, text: str):
        if self.con.oracle:
            return self.con.run(text)
        if not (self.interactive and self.out is sys.stdout):
            with StageProgress() as progress:       # -c and scripts: the stage on stderr, if a terminal
                return self.con.run(text, progress=progress)
        from rich.console import Console       # lazy: rich costs ~30 ms at start-up, only the shell needs it
        # A spinner naming the secure stage the parties are in; it disappears with the result.
        with Console(stderr=True).status("running across the parties (Ctrl-C cancels) ...", spinner="dots") as status:
            return self.con.run(text, progress=lambda stage: status.update(
                f"running across the parties: {stage} ... (Ctrl-C cancels)"))

    def sql(self, text: str) -> None:
        def run():
            started = time.perf_counter()
            result = self._run(text)
            render(result, self.mode, self.out)
            if self.timer:
                self.print(f"Run Time: {time.perf_counter() - started:.3f} s")
        try:
            self.guard(run)
        except KeyboardInterrupt:
            if not self.interactive:
                raise
            if self.con.oracle:
                self.print("cancelled")
                return
            self.print("cancelled; restarting the parties ...")
            self.guard(self.con.restart)


def split_complete(buffer: str) -> tuple[list[str], str]:
    """The complete statements (ended by ';') in ``buffer`` and the unfinished rest."""
    return split_script(buffer)


def repl(args) -> int:
    # lazy: prompt_toolkit and pygments cost ~170 ms at start-up; -c, -f and scripts do not need them
    from prompt_toolkit import PromptSession
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    from sqlmpc.cli.history import StatementHistory

    # Ctrl-C cancels the running query even when the shell was started with SIGINT ignored
    # (as a background job of a non-interactive shell is): Python then installs no handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("sqlmpc — federated SQL over MPC. Starting the parties ...", flush=True)
    with open_connection(args) as con:
        shell = Shell(con, interactive=True)
        names = ", ".join(p.name for p in con.federation.parties)
        print(f"Connected to federation '{con.federation.name}' ({names}); k = "
              f"{con.federation.policy.min_cell_size}"
              + ("; DRY RUN in the clear (--oracle)" if con.oracle else "")
              + ". Enter .help for help.")
        buffer = ""
        typed = ""                       # the lines of the statement being typed, for the history
        history = StatementHistory(str(history_path()))
        session = PromptSession(history=history, lexer=PygmentsLexer(SqlLexer),
                                completer=make_completer(con.federation, lambda: buffer),
                                complete_while_typing=False)
        while True:
            try:
                line = session.prompt("sqlmpc> " if not buffer.strip() else "   ...> ")
            except KeyboardInterrupt:
                buffer = typed = ""
                continue
            except EOFError:
                return 0
            if not buffer.strip() and line.strip().startswith("."):
                history.add(line)
                if not shell.command(line):
                    return 0
                continue
            typed += line + "\n"
            statements, buffer = split_complete(buffer + line + "\n")
            if statements:
                history.add(typed)
                typed = buffer if buffer.strip() else ""
            for sql in statements:
                shell.sql(sql)
