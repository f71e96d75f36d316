"""An embedded party's process: ``python -m sqlmpc.party.process FEDERATION PARTY READ_FD WRITE_FD``.

The embedded federation (:mod:`sqlmpc.party.pipes`) starts one per party and talks to
it over a pair of pipes; the party answers each query as a networked node would.
Nothing imports this module: run as ``-m``, it is loaded once.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import sys
import time
import warnings

from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.mpc.reveal import Ledger
from sqlmpc.party.audit import AuditLog, audited, opened, query_record
from sqlmpc.party.node import PartyNode
from sqlmpc.party.wire import Channel, error_reply, to_ipc


class PartyStopped(KeyboardInterrupt):
    """The party process was stopped (SIGTERM), e.g. when the analyst cancelled the running query."""


STOPPED = "the party was stopped during the query (cancelled)"
_running: tuple | None = None           # (audit log, record, ledger, start) of the query under way


def _stop(signum, frame):
    """SIGTERM: mid-query, write the query's record and leave at once; unwinding through the
    MPyC event loop and its half-done tasks can crash the interpreter on the way out."""
    if _running is not None:
        log, record, ledger, since = _running
        record.update(outcome="cancelled", error=STOPPED, ledger=opened(ledger.entries),
                      duration_s=time.monotonic() - since)
        log.write(record)
        sys.stderr.flush()
        os._exit(0)
    warnings.simplefilter("ignore")     # the query's abandoned MPC tasks are dropped on purpose
    raise PartyStopped(STOPPED)


def party_main(federation_path: str, party: str, conn: Channel, local_files: str = "[]") -> None:
    """Party process: load only this party's data, then serve the coordinator until told to stop.

    Messages (JSON, ``op``): ``propose`` (admit the query: answer ok or the refusal),
    ``execute`` (run the admitted query: answer stats and the cell table, or the error),
    ``abort`` (drop the admitted query; no answer), ``reload`` and ``stop``.  SIGTERM stops
    it even in the middle of a query: the query's audit record is written first (outcome
    ``cancelled``, with what was opened so far).
    """
    signal.signal(signal.SIGTERM, _stop)
    try:
        node = PartyNode(load_federation(federation_path, local_policy=json.loads(local_files)), party)
        conn.send(json.dumps({"ready": True}))
    except Exception as exc:  # report start-up failures (bad data file, ...) to the client
        print(f"sqlmpc party {party}: {exc}", file=sys.stderr)      # in full for its operator only
        conn.send(json.dumps(error_reply(exc, party)))
        return
    admitted = None             # (message, plan, audit record, start) of the proposal accepted last
    while True:
        try:
            msg = json.loads(conn.recv())
        except EOFError:
            return
        op = msg.get("op")
        if op == "stop":
            return
        if op == "reload":
            try:
                node = PartyNode(load_federation(msg["federation"], local_policy=msg.get("local_files") and
                                                 json.loads(msg["local_files"])), party)
                conn.send(json.dumps({"ready": True}))
            except Exception as exc:
                conn.send(json.dumps(error_reply(exc, party)))
        elif op == "propose":
            admitted = _propose(node, msg, conn)
        elif op == "abort":
            if admitted is not None and admitted[0]["qid"] == msg["qid"]:
                proposal, _, record, since = admitted
                AuditLog(proposal["audit"]).write({**record, "decision": "accepted", "outcome": "aborted",
                                                   "error": msg.get("reason"),
                                                   "duration_s": time.monotonic() - since})
            admitted = None
        elif op == "execute":
            if admitted is None or admitted[0]["qid"] != msg["qid"]:
                conn.send(json.dumps(error_reply(errors.PartyError("no accepted proposal with this id"), party)))
            else:
                _execute(node, *admitted, msg, conn)
            admitted = None


def _propose(node: PartyNode, msg: dict, conn: Channel) -> tuple | None:
    """This party's own decision on a proposal: admitted (kept for ``execute``) or refused (audited)."""
    record = query_record(msg["qid"], "participant", msg.get("from"), msg.get("analyst"), msg["sql"])
    since = time.monotonic()
    try:
        plan = node.admit(msg["sql"], msg.get("digest"))
    except Exception as exc:
        exc.stage = "admit"
        AuditLog(msg["audit"]).write({**record, "decision": "refused", "reason": str(exc), "outcome": "refused",
                                      "error": str(exc), "duration_s": time.monotonic() - since})
        conn.send(json.dumps(error_reply(exc, node.party)))
        return None
    conn.send(json.dumps({"ok": True}))
    return msg, plan, {**record, "plan_hash": plan.digest}, since


def _execute(node: PartyNode, proposal: dict, plan, record: dict, since: float, msg: dict, conn: Channel) -> None:
    """Run an admitted query's share, answer, and write this party's audit record.

    A failed query's answer and record carry the openings made before the failure.
    """
    global _running

    def progress(stage: str) -> None:
        if msg.get("progress"):
            conn.send(json.dumps({"progress": stage}))

    record = {**record, "decision": "accepted", "sessions": 1 + len(msg.get("workers", []))}
    ledger = Ledger()
    log = AuditLog(proposal["audit"])
    _running = (log, record, ledger, since)
    try:
        with audited(log, record, since=since):
            try:
                out = node.execute_plan(plan, [tuple(a) for a in msg["addresses"]], ledger=ledger,
                                        timeout=msg.get("timeout", 30.0), progress=progress,
                                        workers=msg.get("workers", []),
                                        max_workers=node.federation.party(node.party).workers)
            finally:
                record["ledger"] = opened(ledger.entries)
            ipc = to_ipc(out.cells)
            record.update(outcome="ok", cells=out.cells.num_rows, cells_sha256=hashlib.sha256(ipc).hexdigest())
    except Exception as exc:
        conn.send(json.dumps(error_reply(exc, node.party, ledger=opened(ledger.entries))))
        return
    finally:
        _running = None
    conn.send(json.dumps({"digest": out.digest, "seconds": out.seconds, "ledger": opened(out.ledger),
                          "timings": out.timings, "stages": out.stages,
                          "max_rss_mb": max(out.peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
    conn.send_bytes(ipc)


if __name__ == "__main__":
    try:
        party_main(sys.argv[1], sys.argv[2], Channel(int(sys.argv[3]), int(sys.argv[4])), *sys.argv[5:6])
    except PartyStopped:
        # Stopped by the driver; the running query's record is written.  Exit without
        # finalising the abandoned MPyC tasks (that only prints errors about them).
        sys.stderr.flush()
        os._exit(0)
