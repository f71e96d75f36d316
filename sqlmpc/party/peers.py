"""A networked node's transport: its peers over Arrow Flight (mutual TLS), its own share in-process.

The node that received an analyst's query coordinates it (:mod:`sqlmpc.party.coordinator`)
as a party itself: it holds its own query slot and MPC port, runs its share of the MPC on a
thread of its own, and reaches every peer's control endpoint (``propose``, ``execute``,
``abort``: :mod:`sqlmpc.party.server`) with a Flight client per peer.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import pyarrow.flight as flight

from sqlmpc import errors
from sqlmpc.mpc.reveal import Ledger
from sqlmpc.party.audit import opened
from sqlmpc.party.coordinator import Answer
from sqlmpc.party.endpoints import call, split_address
from sqlmpc.party.wire import error_reply, to_ipc
from sqlmpc.plan.plan import Plan

ABORT_TIMEOUT = 5.0     # seconds an abort message may take (nobody waits for its answer)


class FlightTransport:
    def __init__(self, node):
        self.node = node            # the NodeServer: its party, slot, MPC ports and its own share
        self.peers = {p.name: split_address(p.address) for p in node.federation.parties if p.name != node.party}
        self.pool = ThreadPoolExecutor(max_workers=16 + 4 * len(self.peers), thread_name_prefix="peer")
        self._clients: dict[str, flight.FlightClient] = {}
        self._clients_lock = threading.Lock()
        self._qid = None
        self._pending: dict[Future, str] = {}       # a party's execute call -> the party
        self._ledger: Ledger | None = None

    # -- the peers' control endpoints ---------------------------------------------------

    def client(self, peer: str) -> flight.FlightClient:
        tls = self.node.tls
        with self._clients_lock:
            c = self._clients.get(peer)
            if c is None:
                host, port = self.peers[peer]
                if tls is None:
                    c = flight.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
                else:
                    c = flight.FlightClient(f"grpc+tls://{host}:{port}", tls_root_certs=tls.ca,
                                            cert_chain=tls.cert, private_key=tls.key,
                                            override_hostname=peer.lower())
                self._clients[peer] = c
            return c

    def call(self, peer: str, action: str, body: dict, timeout: float | None) -> list[bytes]:
        try:
            return call(self.client(peer), action, body, timeout=timeout)
        except flight.FlightError as exc:
            self.forget(peer)
            raise errors.PartyError(f"unreachable or failed on the control channel: {_first_line(exc)}",
                                    party=peer) from None

    def forget(self, peer: str | None) -> None:
        """Drop a peer's control channel: a restarted peer gets a fresh connection, not gRPC's backoff."""
        with self._clients_lock:
            self._clients.pop(peer, None)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _tell_all(self, action: str, body: dict, peers=None) -> None:
        """Send without waiting for the answers (aborts)."""
        for name in peers if peers is not None else self.peers:
            self.pool.submit(self.call, name, action, body, ABORT_TIMEOUT)

    # -- the coordinator's transport ------------------------------------------------------

    def propose(self, proposal: dict, timeout: float) -> dict[str, dict]:
        node = self.node
        if not node.acquire(proposal["qid"], timeout):
            raise errors.OperationalError(f"party '{node.party}' stayed busy for {node.timeout:g} s")
        futures = {name: self.pool.submit(self.call, name, "propose", proposal, node.timeout) for name in self.peers}
        replies = {}
        for name in node.federation.party_names:
            if name == node.party:
                replies[name] = {"ok": True}        # the coordinator compiled the query itself
                continue
            try:
                replies[name] = json.loads(futures[name].result()[0])
            except errors.Error as exc:
                replies[name] = error_reply(exc, name)
        return replies

    def addresses(self, replies: dict[str, dict]) -> list[list[tuple[str, int]]]:
        node = self.node
        count = min([node.workers] + [1 + len(replies[name].get("worker_ports", [])) for name in self.peers])
        sessions = []
        for w in range(count):
            out = []
            for p in node.federation.parties:
                if p.name == node.party:
                    out.append((split_address(p.address)[0], node.take_mpc_port()))
                else:
                    reply = replies[p.name]
                    out.append((self.peers[p.name][0], int(reply["mpc_port"] if w == 0 else reply["worker_ports"][w - 1])))
            sessions.append([("127.0.0.1", port) for _, port in out] if node.insecure else out)
        return sessions

    def abort(self, qid: str, reason: str) -> None:
        self._tell_all("abort", {"qid": qid, "from": self.node.party, "reason": reason})     # also those that did not answer
        self.node.release(qid)

    def execute(self, qid: str, plan: Plan, sessions, ledger: Ledger, progress) -> None:
        self._qid, self._ledger = qid, ledger
        body = {"qid": qid, "from": self.node.party, "addresses": sessions[0], "workers": sessions[1:]}
        self._pending = {self.pool.submit(self.call, name, "execute", body, None): name for name in self.peers}
        self._pending[self.pool.submit(self.node.run_mpc, plan, sessions, ledger)] = self.node.party

    def next_answer(self, timeout: float) -> Answer | None:
        done, _ = wait(self._pending, timeout=timeout, return_when=FIRST_COMPLETED)
        if not done:
            return None
        future = next(iter(done))
        return self._answer(future, self._pending.pop(future))

    def _answer(self, future: Future, party: str) -> Answer:
        if party == self.node.party:
            ledger = opened(self._ledger.entries)
            try:
                cells = future.result()
            except Exception as exc:
                return Answer(party, error_reply(exc, party, ledger=ledger))
            return Answer(party, {"ok": True, "ledger": ledger}, to_ipc(cells))
        try:
            out = future.result()
        except errors.Error as exc:
            return Answer(party, error_reply(exc, party, ledger=[]))
        reply = json.loads(out[0])
        return Answer(party, reply, None if "error" in reply else out[1])

    def stop(self, parties: list[str], why: str) -> list[Answer]:
        """Peers are told to abort (one still computing fails on its own when its MPC peers are gone);
        this node's own share is waited for, since its MPC session lives in this process."""
        self._tell_all("abort", {"qid": self._qid, "from": self.node.party, "reason": why},
                       [p for p in parties if p != self.node.party])
        own = [f for f, p in self._pending.items() if p == self.node.party and p in parties]
        answers = [self._answer(f, self.node.party) for f in own]
        self._pending = {}
        return answers

    def release(self, qid: str) -> None:
        self.node.release(qid)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
