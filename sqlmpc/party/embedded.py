"""The embedded federation: every party in its own process on loopback (:mod:`sqlmpc.party.process`).

This is the same node code a real federation runs on three machines; only
the transport of control messages differs (a pipe per party here).  Control
messages are JSON; results come back as Arrow IPC.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import select
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlmpc import errors
from sqlmpc.catalog import Federation
from sqlmpc.mpc.session import free_ports
from sqlmpc.party.audit import AuditLog, audited, query_record
from sqlmpc.party.wire import Channel, from_ipc, rebuild, to_ipc
from sqlmpc.plan.compile import compile
from sqlmpc.plan.plan import Plan
from sqlmpc.result import Result, finish
from sqlmpc.sql import Query


@dataclass
class PartyProcess:
    name: str
    process: subprocess.Popen
    conn: Channel


STATE_ENV = "SQLMPC_STATE"
FAIL_GRACE = 1.0    # seconds the other parties get to answer after one failed


def state_dir(federation_path: str | Path, state: str | Path | None = None) -> Path:
    """Where an embedded federation keeps its audit logs.

    ``state`` if given, else ``$SQLMPC_STATE``, else ``sqlmpc-state`` next to the
    federation file (for the demo: in the cache directory).  The coordinator's log is
    ``<state>/audit.jsonl``, each party's ``<state>/<party>/audit.jsonl`` — the layout of
    ``sqlmpc serve --state <state>/<party>``.
    """
    if state is None:
        state = os.environ.get(STATE_ENV) or Path(federation_path).resolve().parent / "sqlmpc-state"
    return Path(state)


def local_analyst() -> str:
    """The analyst of an embedded federation: the operating-system user running it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class EmbeddedFederation:
    """Start one process per party; run queries through all of them.

    Every query is audited as on networked nodes (``state_dir``): the coordinator
    (this process) logs its decision, each party process logs its own.
    """

    def __init__(self, federation: Federation, *, timeout: float = 30.0, state: str | Path | None = None):
        if federation.path is None:
            raise errors.InterfaceError("the federation must be loaded from a file")
        self.federation = federation
        self.timeout = timeout
        self.state = state_dir(federation.path, state)
        self.audit = AuditLog(self.state / "audit.jsonl")     # fails early (ConfigError) if not writable
        self.party_audit = {p.name: AuditLog(self.state / p.name / "audit.jsonl").path for p in federation.parties}
        self.coordinator = f"embedded (pid {os.getpid()})"
        self._running = False       # a query was sent and not all parties have answered
        self.last_stats = None
        self._stale = False         # some parties were stopped after a failure
        self.parties: list[PartyProcess] = []
        self._start()

    dry_run = False

    def _start(self) -> None:
        for p in self.federation.parties:
            # A fresh interpreter per party (not fork): it imports only what a node needs.
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()
            proc = subprocess.Popen(
                [sys.executable, "-m", "sqlmpc.party.process", str(self.federation.path), p.name,
                 str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                start_new_session=True)     # the terminal's Ctrl-C reaches the driver only, which cancels
            os.close(to_child_r)
            os.close(from_child_w)
            self.parties.append(PartyProcess(p.name, proc, Channel(from_child_r, to_child_w)))
        for p in self.parties:
            reply = self._receive(p, 60.0)
            if "error" in reply:
                self.close()
                raise rebuild(reply, p.name)

    def restart(self) -> None:
        """Stop the parties and start them afresh (after a cancelled or failed query)."""
        self.close()
        self._running = self._stale = False
        self._start()

    def reload(self, federation: Federation) -> None:
        """Point every party at another federation file (same parties), e.g. new test data."""
        if [p.name for p in federation.parties] != [p.name for p in self.parties]:
            raise errors.InterfaceError("reload needs the same parties")
        for p in self.parties:
            p.conn.send(json.dumps({"op": "reload", "federation": str(federation.path)}))
        replies = [(p.name, self._receive(p, 60.0)) for p in self.parties]
        for name, reply in replies:
            if "error" in reply:
                raise rebuild(reply, name)
        self.federation = federation

    def _receive(self, p: PartyProcess, timeout: float, progress=None) -> dict:
        """The party's next answer; stage reports on the way go to ``progress``."""
        deadline = time.monotonic() + timeout
        while True:
            if not p.conn.poll(max(0.0, deadline - time.monotonic())):
                raise errors.PartyError(f"no answer within {timeout:.0f} s", party=p.name)
            try:
                reply = json.loads(p.conn.recv())
            except EOFError:
                raise errors.PartyError("the party process ended unexpectedly", party=p.name) from None
            if "progress" not in reply:
                return reply
            if progress is not None:
                progress(reply["progress"])

    def query(self, query: str | Query, params=None, progress=None) -> Result:
        """Run a query through every party; ``progress(stage)`` hears the secure stages as they start."""
        if self._stale:                     # parties stopped after a failure: fresh ones first
            self.restart()
        text = query if isinstance(query, str) else query.sql
        record = query_record(uuid.uuid4().hex, "coordinator", self.coordinator, local_analyst(), text)
        with audited(self.audit, record):
            try:
                plan = compile(query, self.federation, params)   # fail fast, with a caret, before any party works
            except errors.Error:
                record["decision"] = "refused"
                raise
            record.update(plan_hash=plan.digest, decision="accepted")
            replies, tables = self._run_parties(plan, record, progress)
            failed = [(name, reply) for name, reply in replies if "error" in reply]
            if failed:
                name, reply = failed[0]          # in the order they arrived: the first is the cause
                raise rebuild(reply, name)
            # Byte-for-byte: Arrow's equals() calls NaN unequal to itself (CORR of a constant is NaN).
            if any(t != tables[0] for t in tables[1:]):
                raise errors.InternalError("parties computed different results")
            result = finish(plan.query, plan.grid, from_ipc(tables[0]))
            result.leakage = replies[0][1]["ledger"]
            self.last_stats = {name: reply for name, reply in replies}
            record.update(outcome="ok", released_cells=sum(not s for s in result.suppressed),
                          suppressed_cells=sum(result.suppressed),
                          result_sha256=hashlib.sha256(to_ipc(result.table)).hexdigest())
            return result

    def _run_parties(self, plan: Plan, record: dict, progress) -> tuple[list, list]:
        """Send the plan's query and hash to every party and collect their answers: [(party, reply)] and the
        result tables of those that succeeded.  ``record["ledger"]`` gets what was opened."""
        ports = free_ports(len(self.parties))
        self._running = True
        for i, p in enumerate(self.parties):
            message = json.dumps({"op": "query", "sql": plan.sql, "digest": plan.digest, "timeout": self.timeout,
                                  "addresses": [["127.0.0.1", port] for port in ports],
                                  "progress": i == 0 and progress is not None, "qid": record["qid"],
                                  "coordinator": self.coordinator, "analyst": record["analyst"],
                                  "audit": str(self.party_audit[p.name])})
            try:
                p.conn.send(message)
            except OSError:
                raise errors.PartyError("the party process is not running", party=p.name) from None
        replies, tables = [], []
        try:
            self._gather(replies, tables, progress)
            self._running = False
        finally:
            # What was opened: the longest ledger any party reports (after a failure the
            # parties may have stopped at different openings).
            record["ledger"] = max((r.get("ledger") or [] for _, r in replies), key=len, default=[])
        return replies, tables

    def _gather(self, replies: list, tables: list, progress) -> None:
        """Every party's answer, in the order they arrive.  When one fails, the others (waiting in
        the MPC for it) get FAIL_GRACE seconds to answer; then they are stopped, to be restarted
        before the next query, and answer with who stopped them."""
        waiting = {p.conn.reader: p for p in self.parties}
        cause = None                        # (party, reply) of the first failure
        deadline = time.monotonic() + self.timeout + 600
        while waiting:
            ready, _, _ = select.select(list(waiting), [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            for reader in ready:
                p = waiting[reader]
                try:
                    reply = json.loads(p.conn.recv())
                except EOFError:
                    reply = {"error": "PartyError", "message": "the party process ended unexpectedly"}
                if "progress" in reply:
                    if progress is not None:
                        progress(reply["progress"])
                    continue
                del waiting[reader]
                replies.append((p.name, reply))
                if "error" not in reply:
                    tables.append(p.conn.recv_bytes())
                elif cause is None:
                    cause = (p.name, reply)
                    deadline = min(deadline, time.monotonic() + FAIL_GRACE)
        for p in waiting.values():          # no answer in time: stop it, restart before the next query
            p.process.terminate()
            self._stale = True
            message = (f"stopped by the coordinator: party '{cause[0]}' failed" if cause
                       else f"no answer within {self.timeout + 600:.0f} s")
            replies.append((p.name, {"error": "PartyError", "message": message, "ledger": []}))

    def close(self) -> None:
        """Stop the parties: idle ones when told to, busy ones (a cancelled query) at once
        with SIGTERM, so that each writes its audit record of the query before it exits."""
        for p in self.parties:
            if self._running and p.process.poll() is None:
                p.process.terminate()
                continue
            try:
                p.conn.send(json.dumps({"op": "stop"}))
            except (OSError, BrokenPipeError):
                pass
        for p in self.parties:
            try:
                p.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.process.kill()
                p.process.wait()
            p.conn.close()
        self.parties = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



def demo_federation_path(persons: int = 5000, seed: int | None = None) -> Path:
    """The default demo federation, generated once into the user's cache directory."""
    import os

    from sqlmpc.demo import generate
    from sqlmpc.demo.generate import DEMO_VERSION

    base = Path(os.environ.get("SQLMPC_CACHE", Path.home() / ".cache" / "sqlmpc"))
    # The generator's version is in the name: a cached demo of an older generator is not reused.
    out = base / (f"demo-v{DEMO_VERSION}-{persons}" + (f"-{seed}" if seed is not None else ""))
    toml = out / "federation.toml"
    if not toml.exists():
        kwargs = {"seed": seed} if seed is not None else {}
        generate(out, persons=persons, **kwargs)
    return toml
