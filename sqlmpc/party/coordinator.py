"""The networked coordinator: the node an analyst asks plans, proposes, executes and releases.

It parses, binds and plans the query (:func:`sqlmpc.plan.compile.compile`), proposes
{sql, digest, catalog fingerprint, k, analyst} to every peer, which each decide on
their own; any refusal stops the query for all.  Then every node runs its local parts
and its share of the MPC; the coordinator checks that all computed the same cell
table, finishes the result and returns it with the leakage ledger.  A mixin of
:class:`sqlmpc.party.server.NodeServer` (its peers, slot and audit log).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout

import pyarrow as pa

from sqlmpc import errors
from sqlmpc.mpc.reveal import Ledger
from sqlmpc.party.audit import audited, opened, query_record
from sqlmpc.party.endpoints import results, split_address
from sqlmpc.party.wire import error_reply, from_ipc, rebuild, to_ipc
from sqlmpc.plan.compile import compile
from sqlmpc.result import finish


class Coordination:
    # -- analyst actions ----------------------------------------------------------------

    def on_status(self, analyst: str) -> list:
        peers = {}
        futures = {name: self._pool.submit(self._peer_call, name, "hello", {}, 3.0) for name in self.peers}
        for name, fut in futures.items():
            try:
                peers[name] = {"reachable": True, **json.loads(fut.result()[0])}
            except Exception as exc:
                peers[name] = {"reachable": False, "error": str(exc)}
        me = json.loads(self.on_hello({})[0].body.to_pybytes())
        return results({"coordinator": self.party, "analyst": analyst,
                        "parties": {self.party: {"reachable": True, **me}, **peers}})

    def on_query(self, msg: dict, analyst: str, peer: str | None = None) -> list:
        try:
            meta, table = self.coordinate(msg["sql"], analyst, peer)
        except Exception as exc:
            return results(error_reply(exc, self.party))
        return results(meta, to_ipc(table))

    def coordinate(self, sql: str, analyst: str, peer: str | None = None) -> tuple[dict, pa.Table]:
        qid = uuid.uuid4().hex
        started = time.monotonic()
        record = {**query_record(qid, "coordinator", self.party, analyst, sql), "peer": peer}
        ledger = Ledger()
        try:
            with audited(self.audit, record, since=started):
                try:
                    self._check_analyst(analyst)
                    plan = compile(sql, self.federation)
                except errors.Error:
                    record["decision"] = "refused"
                    raise
                record["plan_hash"] = plan.digest
                proposal = {"qid": qid, "from": self.party, "analyst": analyst, "sql": plan.sql, "digest": plan.digest,
                            "fingerprint": self.federation.fingerprint, "min_cell_size": plan.min_cell_size}
                ports, qid = self._propose_all(proposal, started, record)
                record.update(qid=qid, decision="accepted")     # the attempt the peers run (and log)
                self._running[qid] = (record, ledger)
                try:
                    addresses = [(self.peers[p.name][0] if p.name != self.party else split_address(p.address)[0],
                                  ports[p.name]) for p in self.federation.parties]
                    if self.insecure:
                        addresses = [("127.0.0.1", port) for _, port in addresses]
                    cells = self._execute_all(qid, plan, addresses, ledger)
                finally:
                    self._running.pop(qid, None)
                    record["ledger"] = opened(ledger.entries)    # after a failure: what was opened before it
                    self._release(qid)
                result = finish(plan.query, plan.grid, cells)
                ipc = to_ipc(result.table)
                record.update(outcome="ok", released_cells=sum(not s for s in result.suppressed),
                              suppressed_cells=sum(result.suppressed),
                              result_sha256=hashlib.sha256(ipc).hexdigest())
                meta = {"qid": qid, "suppressed": result.suppressed, "leakage": record["ledger"],
                        "min_cell_size": result.min_cell_size, "seconds": time.monotonic() - started}
                return meta, result.table
        except errors.OperationalError as exc:
            self._forget(getattr(exc, "party", None))
            raise

    def _propose_all(self, proposal: dict, started: float, record: dict) -> tuple[dict[str, int], str]:
        """Hold our slot and get every peer's acceptance; retry while a peer is busy.

        Returns the MPC ports and the id of the accepted attempt: a retry is a new
        attempt, since peers drop any attempt they were told to abort.
        """
        deadline = started + self.timeout
        for attempt in itertools.count():
            qid = proposal["qid"] if attempt == 0 else f"{proposal['qid']}.{attempt}"
            proposal = dict(proposal, qid=qid)
            if not self._acquire(qid, max(0.0, deadline - time.monotonic())):
                raise errors.OperationalError(f"party '{self.party}' stayed busy for {self.timeout:g} s")
            futures = {name: self._pool.submit(self._peer_call, name, "propose", proposal, self.timeout)
                       for name in self.peers}
            replies, failure, busy = {}, None, False
            for name in self.peers:     # federation order: the first refusal is reported
                try:
                    reply = json.loads(futures[name].result()[0])
                except errors.Error as exc:
                    failure = failure or exc
                    continue
                replies[name] = reply
                if reply.get("busy"):
                    busy = True
                elif "error" in reply and failure is None:
                    failure = rebuild(reply, name)
            if failure is None and not busy:
                ports = {name: int(r["mpc_port"]) for name, r in replies.items()}
                ports[self.party] = self.take_mpc_port()
                return ports, qid
            for name in self.peers:     # also those that did not answer: a late proposal is dropped
                self._pool.submit(self._peer_call, name, "abort",
                                  {"qid": qid, "reason": str(failure) if failure else "a peer was busy"}, 5.0)
            self._release(qid)
            if failure is not None:
                if isinstance(failure, errors.QueryRefusedError) or isinstance(failure, errors.ProgrammingError):
                    record.update(decision="refused", reason=str(failure))
                raise failure
            if time.monotonic() > deadline:
                raise errors.OperationalError(f"the federation stayed busy for {self.timeout:g} s")
            time.sleep(random.uniform(0.05, 0.5))

    def _execute_all(self, qid: str, plan, addresses, ledger: Ledger) -> pa.Table:
        """Run the plan here and at every peer; this party's openings go to ``ledger``."""
        body = {"qid": qid, "addresses": [list(a) for a in addresses]}
        futures = {name: self._pool.submit(self._peer_call, name, "execute", body, None) for name in self.peers}
        own_error = None
        try:
            cells = self.run_mpc(plan, addresses, ledger)
        except Exception as exc:
            own_error, cells = exc, None
            for name in self.peers:
                self._pool.submit(self._peer_call, name, "abort", {"qid": qid, "reason": str(exc)}, 5.0)
        tables, peer_errors, transport_errors, answered = {}, [], [], set()
        deadline = time.monotonic() + (1.5 if own_error is not None else self.timeout)
        for name, fut in futures.items():
            try:
                out = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                transport_errors.append(errors.PartyError("no answer on the control channel", party=name))
                continue
            except errors.Error as exc:
                transport_errors.append(exc)
                continue
            answered.add(name)
            reply = json.loads(out[0])
            if "error" in reply:
                peer_errors.append(rebuild(reply, name))
            else:
                tables[name] = from_ipc(out[1])
        # The most specific error first.  A peer we saw close its MPC connection but that
        # answered with its own error is not the culprit (it gave up on someone else).
        blamed = getattr(own_error, "party", None)
        if own_error is not None and blamed not in (None, self.party) and blamed not in answered:
            raise own_error
        if transport_errors:
            raise transport_errors[0]
        named = [e for e in peer_errors if getattr(e, "party", None) and "party '" in str(e)]
        for exc in peer_errors:
            # A peer's report that names a third party (e.g. "party 'bureau': no MPC message ...").
            text = str(exc)
            for p in self.federation.party_names:
                if p not in answered and p != self.party and f"party '{p}'" in text:
                    raise exc
        if own_error is not None:
            raise own_error
        if named:
            raise named[0]
        if peer_errors:
            raise peer_errors[0]
        if any(not t.equals(cells) for t in tables.values()):
            raise errors.InternalError("parties computed different results")
        return cells
