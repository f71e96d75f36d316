"""The embedded federation's transport: a process per party on this machine, a pair of pipes to each.

The coordinator (:mod:`sqlmpc.party.coordinator`) sends JSON control messages down each
pipe (:class:`sqlmpc.party.wire.Channel`); each party process (:mod:`sqlmpc.party.process`)
answers as a networked node would, its cell table as Arrow IPC.  The parties' MPC runs on
loopback ports that this transport holds for the query (:func:`reserve_ports`), so that two
federations on one machine never pick the same port.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlmpc import errors
from sqlmpc.catalog import Federation
from sqlmpc.mpc.reveal import Ledger
from sqlmpc.party.coordinator import Answer
from sqlmpc.party.wire import Channel, error_reply, rebuild
from sqlmpc.plan.plan import Plan

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0    # seconds a party process may take to load its data


def reserve_ports(n: int, host: str = LOOPBACK) -> list[socket.socket]:
    """``n`` ports held until the sockets are closed: bound, so that no other bind to port 0 (another
    federation's reservation, a probe for a free port) and no outgoing connection gets them, yet not
    listening and marked SO_REUSEADDR after the bind, so that a party's MPyC server (which binds with
    SO_REUSEADDR) can bind and listen on one."""
    held = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((host, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.append(s)
    return held


@dataclass
class PartyProcess:
    name: str
    process: subprocess.Popen
    conn: Channel


def local_files_arg(federation: Federation) -> str:
    """The local files the federation was loaded with (JSON [[party or null, path], ...]): each party
    process loads the same, so a party's private settings ([data], [postgresql], [spark]) reach it."""
    return json.dumps([[owner, str(path)] for owner, path in federation.local_files])


class PipeTransport:
    """The party processes of an embedded federation and the coordinator's messages to them."""

    def __init__(self, federation: Federation, audit_paths: dict[str, Path], timeout: float):
        self.federation = federation
        self.audit_paths = audit_paths
        self.timeout = timeout
        self.parties: list[PartyProcess] = []
        self.running = False        # a query was sent and not all parties have answered
        self.stale = False          # some parties were stopped or lost: restart before the next query
        self._ports: list[socket.socket] = []
        self._waiting: dict = {}    # pipe reader -> party, while a query runs
        self._lost: list[Answer] = []   # parties the query could not be sent to
        self._progress = None

    # -- the processes ----------------------------------------------------------------

    def start(self) -> None:
        for p in self.federation.parties:
            # A fresh interpreter per party (not fork): it imports only what a node needs.
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()
            proc = subprocess.Popen(
                [sys.executable, "-m", "sqlmpc.party.process", str(self.federation.path), p.name,
                 str(to_child_r), str(from_child_w), local_files_arg(self.federation)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                start_new_session=True)     # the terminal's Ctrl-C reaches the driver only, which cancels
            os.close(to_child_r)
            os.close(from_child_w)
            self.parties.append(PartyProcess(p.name, proc, Channel(from_child_r, to_child_w)))
        self.running = self.stale = False
        replies = self._ask_all(START_TIMEOUT)
        failed = next(((name, r) for name, r in replies.items() if "error" in r), None)
        if failed is not None:
            self.close()
            raise rebuild(failed[1], failed[0])

    def reload(self, federation: Federation) -> None:
        """Point every party at another federation file (same parties)."""
        replies = self._ask_all(START_TIMEOUT, lambda p: {"op": "reload", "federation": str(federation.path),
                                                                  "local_files": local_files_arg(federation)})
        for name, reply in replies.items():
            if "error" in reply:
                raise rebuild(reply, name)
        self.federation = federation

    def close(self) -> None:
        """Stop the parties: idle ones when told to, busy ones (a cancelled query) at once
        with SIGTERM, so that each writes its audit record of the query before it exits."""
        for p in self.parties:
            if self.running and p.process.poll() is None:
                p.process.terminate()
                continue
            try:
                p.conn.send(json.dumps({"op": "stop"}))
            except OSError:
                pass
        for p in self.parties:
            try:
                p.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.process.kill()
                p.process.wait()
            p.conn.close()
        self.parties = []
        self._release_ports()

    # -- messages ----------------------------------------------------------------------

    def _send(self, p: PartyProcess, message: dict) -> dict | None:
        """Send; None when sent, else the error reply of a party whose process is gone."""
        try:
            p.conn.send(json.dumps(message))
            return None
        except OSError:
            self.stale = True
            return error_reply(errors.PartyError("the party process is not running", party=p.name), p.name)

    def _receive(self, p: PartyProcess, timeout: float) -> dict:
        try:
            if p.conn.poll(timeout):
                return json.loads(p.conn.recv())
            message = f"no answer within {timeout:.0f} s"
        except EOFError:
            message = "the party process ended unexpectedly"
        self.stale = True
        return error_reply(errors.PartyError(message, party=p.name), p.name)

    def _ask_all(self, timeout: float, message=lambda p: None) -> dict[str, dict]:
        """Every party's answer to ``message(party)`` (None: nothing to send, e.g. to its start),
        in federation order."""
        sent = {}
        for p in self.parties:
            m = message(p)
            sent[p.name] = self._send(p, m) if m is not None else None
        deadline = time.monotonic() + timeout
        return {p.name: sent[p.name] or self._receive(p, max(0.0, deadline - time.monotonic()))
                for p in self.parties}

    # -- the coordinator's transport -------------------------------------------------

    def propose(self, proposal: dict, timeout: float) -> dict[str, dict]:
        return self._ask_all(timeout, lambda p: {"op": "propose", **proposal, "audit": str(self.audit_paths[p.name])})

    def addresses(self, replies: dict[str, dict]) -> list[list[tuple[str, int]]]:
        m, sessions = len(self.parties), min(p.workers for p in self.federation.parties)
        self._ports = reserve_ports(m * sessions)
        ports = [(LOOPBACK, s.getsockname()[1]) for s in self._ports]
        return [ports[w * m:(w + 1) * m] for w in range(sessions)]

    def abort(self, qid: str, reason: str) -> None:
        for p in self.parties:
            self._send(p, {"op": "abort", "qid": qid, "reason": reason})

    def execute(self, qid: str, plan: Plan, sessions, ledger: Ledger, progress) -> None:
        self._progress = progress
        self._waiting, self._lost = {}, []
        self.running = True
        for i, p in enumerate(self.parties):
            failed = self._send(p, {"op": "execute", "qid": qid, "timeout": self.timeout,
                                    "addresses": sessions[0], "workers": sessions[1:],
                                    "progress": i == 0 and progress is not None})
            if failed is not None:
                self._lost.append(Answer(p.name, failed))
            else:
                self._waiting[p.conn.reader] = p

    def next_answer(self, timeout: float) -> Answer | None:
        if self._lost:
            return self._lost.pop(0)
        deadline = time.monotonic() + timeout
        while self._waiting:
            ready, _, _ = select.select(list(self._waiting), [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            p = self._waiting[ready[0]]
            try:
                reply = json.loads(p.conn.recv())
            except EOFError:
                self.stale = True
                reply = error_reply(errors.PartyError("the party process ended unexpectedly", party=p.name),
                                    p.name, ledger=[])
            if "progress" in reply:
                if self._progress is not None:
                    self._progress(reply["progress"])
                continue
            del self._waiting[p.conn.reader]
            self.running = bool(self._waiting)
            return Answer(p.name, reply, None if "error" in reply else p.conn.recv_bytes())
        return None

    def stop(self, parties: list[str], why: str) -> list[Answer]:
        """No answer in time: stop them (SIGTERM: each writes its audit record), restart before the next query."""
        for p in self.parties:
            if p.name in parties:
                p.process.terminate()
                self._waiting.pop(p.conn.reader, None)
        self.running = bool(self._waiting)
        self.stale = True
        return []

    def release(self, qid: str) -> None:
        self._release_ports()
        self._progress = None

    def _release_ports(self) -> None:
        for s in self._ports:
            s.close()
        self._ports = []
