"""A party's audit log: one JSON object per line, appended, never rewritten.

Each record says who asked what and what this party decided: time, query
id, role (coordinator or participant), analyst, query text, plan hash,
decision and reason, the MPC sessions it ran (1 + its workers), the leakage
ledger (what was opened, how many values, why), outcome, duration.  It holds no data values: of the result only the
number of released and suppressed cells and a hash of the released table.
A failed query's ledger lists what was opened before the failure.

A peer action refused because of who sent it (a certificate that names no party, a
``from`` that is not the calling party, an ``execute`` or ``abort`` by a party that did
not propose the query) is a record too (``event: "peer action refused"``): the action,
the authenticated caller, the party it claimed to be, the query id and the reason.

Failed authentications are records too (``event: "authentication failed"``):
the reason, the endpoint and action, the caller's address when known — never
the token.

Networked nodes write ``--state DIR/audit.jsonl``; the embedded federation
writes the same records (see ``sqlmpc.party.embedded.state_dir``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlmpc import errors

AUTH_FAILED = "authentication failed"
PEER_REFUSED = "peer action refused"


class AuditLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            raise errors.ConfigError(
                f"cannot write the audit log {self.path}: {exc.strerror or exc}; every party must keep one "
                "(choose a writable state directory)") from None
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """No more records (a stopping node has written its final ones)."""
        with self._lock:
            self._closed = True

    def write(self, record: dict) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        line = json.dumps(record, default=str, sort_keys=False) + "\n"
        with self._lock:
            if self._closed:
                return
            # O_APPEND: every write lands at the end, even with another writer.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def started() -> float:
    return time.monotonic()


def opened(entries) -> list[dict]:
    """Ledger entries (``sqlmpc.mpc.reveal.Opening``) as audit JSON: what, count, why."""
    return [{"what": e.what, "count": e.count, "why": e.why} for e in entries]


def query_record(qid: str, role: str, coordinator: str | None, analyst: str | None, sql: str | None,
                 plan_hash: str | None = None) -> dict:
    """The fields every query record starts with; ``audited`` fills in the rest."""
    return {"qid": qid, "role": role, "coordinator": coordinator, "analyst": analyst, "sql": sql,
            "plan_hash": plan_hash, "decision": None, "reason": None, "ledger": [], "outcome": None}


@contextlib.contextmanager
def audited(log: AuditLog, record: dict, since: float | None = None):
    """Write ``record`` once when the block ends, however it ends.

    The block sets ``decision`` (and ``reason`` when refused), ``ledger`` and,
    on success, ``outcome = "ok"``.  An exception leaves the outcome
    ``refused`` (when the decision was a refusal), ``cancelled`` (KeyboardInterrupt:
    Ctrl-C, or a party stopped mid-query) or ``failed``, with the error; the ledger
    then holds whatever the block put there before the failure.
    """
    since = time.monotonic() if since is None else since
    try:
        yield record
    except BaseException as exc:
        if record.get("outcome") is None:
            refused = record.get("decision") == "refused"
            cancelled = isinstance(exc, KeyboardInterrupt)
            record["outcome"] = "refused" if refused else "cancelled" if cancelled else "failed"
            if refused and record.get("reason") is None:
                record["reason"] = str(exc)
            record["error"] = str(exc) or type(exc).__name__
        raise
    finally:
        record["duration_s"] = time.monotonic() - since
        log.write(record)


def auth_failure(log: AuditLog, *, reason: str, endpoint: str, action: str | None = None,
                 peer: str | None = None, client: str | None = None, claimed: str | None = None) -> None:
    """Record a failed authentication: why, where it was tried, the caller's address, client
    software and claimed analyst name when known — never the credential itself."""
    log.write({"event": AUTH_FAILED, "reason": reason, "endpoint": endpoint, "action": action,
               "peer": peer, "client": client, "claimed": claimed})


def peer_refusal(log: AuditLog, *, reason: str, action: str, caller: str | None, claimed: str | None = None,
                 qid: str | None = None, peer: str | None = None) -> None:
    """Record a peer action refused because of who sent it: the party its certificate names
    (``caller``), the party the message claimed to come from, the query, the caller's address."""
    log.write({"event": PEER_REFUSED, "reason": reason, "endpoint": "peer", "action": action, "caller": caller,
               "claimed": claimed, "qid": qid, "peer": peer})
