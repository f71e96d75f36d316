"""An embedded party's process: ``python -m sqlmpc.party.process FEDERATION PARTY READ_FD WRITE_FD``.

The coordinator (:mod:`sqlmpc.party.embedded`) starts one per party and talks to
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
from sqlmpc.party.wire import Channel, to_ipc


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


def party_main(federation_path: str, party: str, conn: Channel) -> None:
    """Party process: load only this party's data, then serve queries until told to stop.

    SIGTERM stops it even in the middle of a query: the query's audit record is
    written first (outcome ``cancelled``, with what was opened so far).
    """
    signal.signal(signal.SIGTERM, _stop)
    try:
        node = PartyNode(load_federation(federation_path), party)
        conn.send(json.dumps({"ready": True}))
    except Exception as exc:  # report start-up failures (bad data file, ...) to the client
        conn.send(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return
    while True:
        try:
            msg = json.loads(conn.recv())
        except EOFError:
            return
        if msg.get("op") == "stop":
            return
        if msg.get("op") == "reload":
            try:
                node = PartyNode(load_federation(msg["federation"]), party)
                conn.send(json.dumps({"ready": True}))
            except Exception as exc:
                conn.send(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
            continue
        _run_query(node, msg, conn)


def _run_query(node, msg: dict, conn: Channel) -> None:
    """One query at this party: admit it, run its share, answer, and write this party's audit record.

    A failed query's answer and record carry the openings made before the failure.
    """
    stage = ["admit"]          # where this party is: an error names it

    def progress(stage_: str) -> None:
        stage[0] = stage_
        if msg.get("progress"):
            conn.send(json.dumps({"progress": stage_}))

    global _running
    record = query_record(msg.get("qid"), "participant", msg.get("coordinator"), msg.get("analyst"), msg["sql"])
    ledger = Ledger()
    log = AuditLog(msg["audit"])
    _running = (log, record, ledger, time.monotonic())
    try:
        with audited(log, record):
            try:
                plan = node.admit(msg["sql"], msg.get("digest"))
            except errors.Error:
                record["decision"] = "refused"
                raise
            record.update(plan_hash=plan.digest, decision="accepted")
            stage[0] = "local"                 # the node reports the stages from here on
            try:
                out = node.execute_plan(plan, [tuple(a) for a in msg["addresses"]], ledger=ledger,
                                        timeout=msg.get("timeout", 30.0), progress=progress)
            finally:
                record["ledger"] = opened(ledger.entries)
            ipc = to_ipc(out.cells)
            record.update(outcome="ok", cells=out.cells.num_rows, cells_sha256=hashlib.sha256(ipc).hexdigest())
    except Exception as exc:
        conn.send(json.dumps({"error": type(exc).__name__, "message": str(exc), "stage": stage[0],
                              "party": getattr(exc, "party", None) or node.party, "ledger": opened(ledger.entries)}))
        return
    finally:
        _running = None
    conn.send(json.dumps({"digest": out.digest, "seconds": out.seconds, "ledger": opened(out.ledger),
                          "timings": out.timings,
                          "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    conn.send_bytes(ipc)


if __name__ == "__main__":
    try:
        party_main(sys.argv[1], sys.argv[2], Channel(int(sys.argv[3]), int(sys.argv[4])))
    except PartyStopped:
        # Stopped by the driver; the running query's record is written.  Exit without
        # finalising the abandoned MPyC tasks (that only prints errors about them).
        sys.stderr.flush()
        os._exit(0)
