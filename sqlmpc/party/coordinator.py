"""The one coordinator of a query: propose → every party re-validates → execute → gather → release.

Both federations run it: the embedded one (a process per party on this machine, reached
through pipes: :mod:`sqlmpc.party.pipes`) and a networked node that received an analyst's
query (its peers reached through Arrow Flight with mutual TLS, its own share run in-process:
:mod:`sqlmpc.party.peers`).  Only the :class:`Transport` differs.

The coordinator compiles the query (a refusal, with a caret, before any party works) and
proposes {sql, plan hash, catalog fingerprint, k, analyst} to every party; each compiles it
again on its own and accepts or refuses.  Any refusal stops the query for all (the first in
federation order is reported); a busy party makes the coordinator retry with a new attempt.
Then every party runs its share and the answers are taken as they arrive: the first failure
is the cause; the parties still working get FAIL_GRACE seconds to answer (GUESS_GRACE when
the failure is only a consequence, or names a guessed culprit) and are then stopped.  A failure is an sqlmpc error whose ``party`` and ``stage`` (admit, local, input,
shuffle, join, ...) are data from the failing party's reply, never read out of its text.
Every party must have computed the same cell table, compared byte for byte (Arrow's
``equals`` calls NaN unequal to itself, and CORR of a constant is NaN); the coordinator
finishes it into the analyst's rows.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Protocol

from sqlmpc import errors
from sqlmpc.catalog import Federation
from sqlmpc.mpc.reveal import Ledger
from sqlmpc.party.audit import AuditLog, audited, query_record
from sqlmpc.party.wire import error_reply, from_ipc, rebuild, to_ipc
from sqlmpc.plan.compile import compile
from sqlmpc.plan.plan import Plan
from sqlmpc.result import Result, finish
from sqlmpc.sql import Query

FAIL_GRACE = 1.0        # seconds the other parties get to answer after one failed
GUESS_GRACE = 4.0       # ... after one failed only as a consequence, or naming a guessed culprit
NO_ANSWER = 600.0       # seconds beyond the session timeout a party may compute before it counts as lost


@dataclass
class Answer:
    """One party's answer to ``execute``: its reply (stats and ``ledger``, or an error reply with
    ``error``, ``message``, ``party``, ``stage``, ``ledger``) and, when it succeeded, its cell table."""
    party: str
    reply: dict
    cells: bytes | None = None      # Arrow IPC

    @property
    def failed(self) -> bool:
        return "error" in self.reply


class Transport(Protocol):
    """How the coordinator reaches the parties; replies are JSON-like dicts (``wire.error_reply`` for errors)."""

    def propose(self, proposal: dict, timeout: float) -> dict[str, dict]:
        """Every party's reply to the proposal, in federation order: accepted, ``{"busy": True}``, or an error."""

    def addresses(self, replies: dict[str, dict]) -> list[list[tuple[str, int]]]:
        """The MPC sessions of the accepted proposal: per session, every party's address in
        federation order.  Session 0 is each party's own; one more per worker, as many as the
        party with the fewest ``workers`` runs (:mod:`sqlmpc.mpc.workers`)."""

    def abort(self, qid: str, reason: str) -> None:
        """Tell every party to drop the proposal (those that accepted it write an 'aborted' record)."""

    def execute(self, qid: str, plan: Plan, sessions: list[list[tuple[str, int]]], ledger: Ledger,
                progress) -> None:
        """Start every party's share; a share run in this process records its openings in ``ledger``."""

    def next_answer(self, timeout: float) -> Answer | None:
        """The next party to answer ``execute`` (None: none within ``timeout`` seconds)."""

    def stop(self, parties: list[str], why: str) -> list[Answer]:
        """Stop the parties that did not answer in time; the answers of those that still could
        (a share run in this process is waited for: its MPC session lives here)."""

    def release(self, qid: str) -> None:
        """The query is over (free what it held: ports, the query slot)."""


@dataclass
class Released:
    """A coordinated query's outcome: the analyst's rows and every party's reply (timings, memory)."""
    result: Result
    qid: str
    answers: dict[str, dict]


def consequence(answer: Answer) -> bool:
    """Whether a failure is the consequence of another's (a party that lost its MPC peer), or
    names its culprit by a guess (a party that waited on several silent peers)."""
    return answer.reply.get("error") in ("PeerLostError", "PeerSilentError")


class Coordinator:
    def __init__(self, name: str, federation: Federation, transport: Transport, audit: AuditLog, *,
                 timeout: float = 30.0):
        self.name = name                 # as the parties' audit records name the coordinator
        self.federation = federation
        self.transport = transport
        self.audit = audit
        self.timeout = timeout
        self.running: dict[str, tuple[dict, Ledger]] = {}     # qid -> audit record and ledger, while it runs

    def run(self, query: str | Query, params=None, *, analyst: str, progress=None,
            check: Callable[[str], None] | None = None, note: dict | None = None) -> Released:
        """Run one query through every party.  ``check(analyst)`` may refuse the analyst first;
        ``note`` adds fields to the audit record; ``progress(stage)`` hears the secure stages."""
        started = time.monotonic()
        text = query if isinstance(query, str) else query.sql
        record = {**query_record(uuid.uuid4().hex, "coordinator", self.name, analyst, text), **(note or {})}
        ledger = Ledger()
        with audited(self.audit, record, since=started):
            try:
                if check is not None:
                    check(analyst)
                plan = compile(query, self.federation, params)   # fail fast, with a caret, before any party works
            except errors.Error:
                record["decision"] = "refused"
                raise
            record["plan_hash"] = plan.digest
            replies, qid = self._propose(plan, record, started)
            record.update(qid=qid, decision="accepted")     # the attempt the parties run (and log)
            answers: dict[str, Answer] = {}
            self.running[qid] = (record, ledger)
            try:
                sessions = self.transport.addresses(replies)
                record["sessions"] = len(sessions)
                self.transport.execute(qid, plan, sessions, ledger, progress)
                cause = self._gather(answers)
            finally:
                self.running.pop(qid, None)
                self.transport.release(qid)
                # What was opened: the longest ledger any party reports (after a failure the
                # parties may have stopped at different openings).
                record["ledger"] = max((a.reply.get("ledger") or [] for a in answers.values()), key=len, default=[])
            if cause is not None:
                raise rebuild(cause.reply, cause.party)
            tables = [a.cells for a in answers.values()]
            if any(t != tables[0] for t in tables[1:]):     # bytes: NaN equals NaN
                raise errors.InternalError("parties computed different results")
            result = finish(plan.query, plan.grid, from_ipc(tables[0]))
            result.leakage = record["ledger"]
            record.update(outcome="ok", released_cells=sum(not s for s in result.suppressed),
                          suppressed_cells=sum(result.suppressed),
                          result_sha256=hashlib.sha256(to_ipc(result.table)).hexdigest())
            return Released(result, qid, {name: a.reply for name, a in answers.items()})

    def _propose(self, plan: Plan, record: dict, started: float) -> tuple[dict[str, dict], str]:
        """Every party's acceptance of the plan, and the id of the accepted attempt: a retry
        (while a party is busy) is a new attempt, since parties drop an attempt they were told
        to abort."""
        deadline = started + self.timeout
        for attempt in itertools.count():
            qid = record["qid"] if attempt == 0 else f"{record['qid']}.{attempt}"
            proposal = {"qid": qid, "from": self.name, "analyst": record["analyst"], "sql": plan.sql,
                        "digest": plan.digest, "fingerprint": self.federation.fingerprint,
                        "min_cell_size": plan.min_cell_size}
            replies = self.transport.propose(proposal, max(0.0, deadline - time.monotonic()))
            refusal = next((rebuild(r, name) for name, r in replies.items() if "error" in r), None)
            if refusal is None and not any(r.get("busy") for r in replies.values()):
                return replies, qid
            self.transport.abort(qid, str(refusal) if refusal else "a party was busy")
            if refusal is not None:
                if isinstance(refusal, errors.ProgrammingError):     # a refusal, not a failure to reach it
                    record.update(decision="refused", reason=str(refusal))
                raise refusal
            if time.monotonic() > deadline:
                raise errors.OperationalError(f"the federation stayed busy for {self.timeout:g} s")
            time.sleep(random.uniform(0.05, 0.5))

    def _gather(self, answers: dict[str, Answer]) -> Answer | None:
        """Every party's answer into ``answers``, in the order they arrive; the first failure (the
        cause), unless it only lost its peer (:class:`errors.PeerLostError`) and another reports.

        When one fails, the others (perhaps waiting in the MPC for it) get FAIL_GRACE seconds to
        answer; then they are stopped and answer with who stopped them."""
        waiting = list(self.federation.party_names)
        cause = None
        deadline = time.monotonic() + self.timeout + NO_ANSWER
        late = f"no answer within {self.timeout + NO_ANSWER:.0f} s"
        while waiting:
            answer = self.transport.next_answer(max(0.0, deadline - time.monotonic()))
            if answer is None:
                break
            waiting.remove(answer.party)
            answers[answer.party] = answer
            if not answer.failed and deadline > time.monotonic() + self.timeout:
                # A party that finished passed the session's closing barrier with every other party: the
                # rest only have to send their cells, and none is waited for longer than the timeout.
                deadline = time.monotonic() + self.timeout
                late = f"no answer within {self.timeout:g} s after party '{answer.party}' finished"
            if answer.failed and (cause is None or consequence(cause) and not consequence(answer)):
                cause = answer              # a party that lost its peer is not the cause when the peer reports
                # A party that waited on several silent peers guesses the culprit, and the party that
                # knows may time out a few seconds later (its silence began when the guesser's last
                # message reached it): it gets longer to answer.
                grace = GUESS_GRACE if consequence(answer) else FAIL_GRACE
                deadline = min(deadline, time.monotonic() + grace)
        if waiting:
            why = f"stopped by the coordinator: party '{cause.party}' failed" if cause is not None else late
            for answer in self.transport.stop(waiting, why):
                waiting.remove(answer.party)
                answers[answer.party] = answer
            for name in waiting:
                answers[name] = Answer(name, error_reply(errors.PartyError(why, party=name), name, ledger=[]))
        return cause or next((a for a in answers.values() if a.failed), None)
