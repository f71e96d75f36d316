"""A long-running party node on the network: ``sqlmpc serve``.

Three endpoints per node (ports default to the federation address's port P):

* peer control, P (the federation ``address``): Arrow Flight with mutual TLS;
  only holders of a certificate from the federation's CA get through.  Actions
  (JSON bodies): ``hello``, ``propose``, ``execute``, ``abort``.  A caller is the
  party its certificate names (gRPC's peer identity: the first subjectAltName,
  ``sqlmpc.mpc.session.certificate_party``); ``propose`` is accepted only when its
  ``from`` is that party, ``execute`` and ``abort`` only from the party that
  proposed the query.  Every refusal of this kind is audited (``peer action refused``).
* analyst control, ``--analyst-port`` (default P + 1): Arrow Flight with TLS and
  a bearer token (``authorization: Bearer ...``).  Actions: ``query``, ``status``.
* MPC data plane, ``--mpc-port`` (default P + 2): MPyC's own TCP channels with
  TLS, open only while a query runs (a fresh MpcSession per query).  Each MPC
  connection authenticates its peer as the party at that position (both directions);
  a party's MPC host is the host of its federation address, and its port the one that
  party announced when it accepted (relayed by the coordinator, checked by the TLS identity).

The node that receives an analyst's query coordinates it (the one coordinator of
:mod:`sqlmpc.party.coordinator`, over :mod:`sqlmpc.party.peers`): it parses, binds and
plans, proposes {sql, digest, catalog fingerprint, k, analyst} to every peer
(all required: a proposal without one is refused);
each peer decides on its own (own federation file + local policy,
``PartyNode.admit``) and answers with its MPC port or its reason.  Any refusal
stops the query for all (the accepted peers are told to abort) and the analyst
gets that party's reason.  Otherwise all nodes run their local parts and the
MPC concurrently (``PartyNode.run_local`` / ``run_secure``, the same code the
embedded federation runs); the coordinator checks that every party computed
the same cell table, finishes the result and returns it as Arrow IPC with the
leakage ledger.  One query at a time per node (a slot, held from proposal to
the end of execution); a busy peer says so and the coordinator retries.

Without certificates the node refuses to start unless ``--insecure-loopback``,
and then it binds 127.0.0.1 only.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

import sqlmpc
from sqlmpc import errors
from sqlmpc.catalog import load_federation, shared_text
from sqlmpc.mpc import runtime, unpickle
from sqlmpc.mpc.reveal import Ledger
from sqlmpc.mpc.session import MpcSession, SessionError, TlsFiles, names_party, session_open
from sqlmpc.mpc.workers import start_fork_server
from sqlmpc.party import watchdog
from sqlmpc.party.audit import AuditLog, audited, auth_failure, opened, peer_refusal, query_record
from sqlmpc.party.coordinator import Coordinator
from sqlmpc.party.endpoints import TokenAuth, results, split_address
from sqlmpc.party.keys import load_tokens
from sqlmpc.party.node import PartyNode
from sqlmpc.party.peers import FlightTransport
from sqlmpc.party.wire import error_reply, to_ipc

BUSY_WAIT = 2.0        # how long a peer waits for its slot before answering "busy"


def version() -> str:
    return getattr(sqlmpc, "__version__", "unknown")


MPC_PORTS = 16          # MPC ports a node rotates through, from --mpc-port on


@dataclass
class Tls:
    cert: bytes
    key: bytes
    ca: bytes
    files: object          # sqlmpc.mpc.session.TlsFiles for the MPC data plane


# -- the node ----------------------------------------------------------------------

class NodeServer:
    def __init__(self, federation_path: str | Path, party: str, *, local_policy: str | Path | None = None,
                 keys: str | Path | None = None, tokens: str | Path | None = None,
                 insecure_loopback: bool = False, bind: str = "0.0.0.0", analyst_port: int | None = None,
                 mpc_port: int | None = None, state_dir: str | Path | None = None, timeout: float = 30.0,
                 workers: int | None = None):

        self.federation = load_federation(federation_path, local_policy=local_policy, party=party)
        self.node = PartyNode(self.federation, party)
        self.party = self.node.party
        self.timeout = timeout
        self.tls: Tls | None = None
        self.tokens: dict[str, str] | None = None
        if keys is not None:
            kdir = Path(keys)
            pdir = kdir / self.party
            cert, key, ca = pdir / "cert.pem", pdir / "key.pem", (pdir / "ca.pem")
            if not ca.exists():
                ca = kdir / "ca.pem"
            for f in (cert, key, ca):
                if not f.exists():
                    raise errors.ConfigError(f"missing key material {f} (run: sqlmpc keys init)")
            self.tls = Tls(cert.read_bytes(), key.read_bytes(), ca.read_bytes(),
                           TlsFiles(str(cert), str(key), str(ca), tuple(self.federation.party_names)))
            if tokens is None and (kdir / "tokens.json").exists():
                tokens = kdir / "tokens.json"
        elif not insecure_loopback:
            raise errors.ConfigError(
                "no certificates: a node needs --keys DIR (from 'sqlmpc keys init') for TLS, or "
                "--insecure-loopback for a plaintext development node on 127.0.0.1")
        if tokens is not None:
            self.tokens = load_tokens(tokens)
        elif self.tls is not None:
            raise errors.ConfigError("TLS without analyst tokens: give --tokens tokens.json")
        self.insecure = self.tls is None
        self.bind = "127.0.0.1" if self.insecure else bind
        host, port = split_address(self.federation.party(self.party).address)
        self.port = port
        self.analyst_port = analyst_port or port + 1
        # Sessions this node runs per query (sqlmpc.mpc.workers): --workers, else the federation file's.
        self.workers = workers or self.federation.party(self.party).workers
        self.mpc_port = mpc_port or port + 2       # first of MPC_PORTS ports per worker, taken in turn
        self.mpc_ports = MPC_PORTS * self.workers
        if self.workers > 1:
            start_fork_server()
        self._mpc_turn = -1
        state = Path(state_dir) if state_dir else Path("sqlmpc-state") / self.party
        self.audit = AuditLog(state / "audit.jsonl")
        self.peers = FlightTransport(self)
        self.coordinator = Coordinator(self.party, self.federation, self.peers, self.audit, timeout=timeout)
        self._slot_cond = threading.Condition()
        self._slot: str | None = None
        self._pending: dict[str, dict] = {}
        self._aborted: list[tuple[str | None, str]] = []      # (the proposer that aborted, qid)
        self._running: dict[str, tuple[dict, Ledger]] = {}     # qid -> audit record and ledger, while it runs
        self.sessions_opened = 0
        watchdog.install()
        self._peer_server = None
        self._analyst_server = None

    # -- endpoints ------------------------------------------------------------

    def _location(self, port: int) -> str:
        scheme = "grpc+tcp" if self.insecure else "grpc+tls"
        return f"{scheme}://{self.bind}:{port}"

    def start(self) -> None:
        tls_args = {}
        if self.tls is not None:
            tls_args = {"tls_certificates": [flight.CertKeyPair(self.tls.cert, self.tls.key)]}
        peer_args = dict(tls_args)
        if self.tls is not None:
            peer_args.update(verify_client=True, root_certificates=self.tls.ca)
        self._peer_server = _Endpoint(self._location(self.port), self, "peer", **peer_args)
        self._analyst_server = _Endpoint(self._location(self.analyst_port), self, "analyst",
                                         middleware={"auth": TokenAuth(self.tokens, self.auth_failed)},
                                         **tls_args)
        for s in (self._peer_server, self._analyst_server):
            threading.Thread(target=s.serve, daemon=True).start()

    def audit_stop(self) -> None:
        """Record the queries this stopping node leaves behind (with what they opened so far),
        then close the audit log: their own threads end with the process."""
        for record, ledger in [*self._running.values(), *self.coordinator.running.values()]:
            self.audit.write({**record, "ledger": opened(ledger.entries), "outcome": "failed",
                              "error": "the node was stopped during the query"})
        for p in list(self._pending.values()):
            self.audit.write({**p["record"], "decision": "accepted", "outcome": "aborted",
                              "error": "the node was stopped before the query started"})
        self.audit.close()

    def shutdown(self) -> None:
        for s in (self._analyst_server, self._peer_server):
            if s is not None:
                s.shutdown()
        self.peers.shutdown()

    def auth_failed(self, reason: str, action: str | None, peer: str | None, client: str | None) -> None:
        """Audit a refused analyst call: why, which action, from where (never the token)."""
        auth_failure(self.audit, reason=reason, endpoint="analyst", action=action, peer=peer, client=client)

    # -- analyst actions ------------------------------------------------------------------

    def on_status(self, analyst: str) -> list:
        peers = {}
        futures = {name: self.peers.pool.submit(self.peers.call, name, "hello", {}, 3.0) for name in self.peers.peers}
        for name, fut in futures.items():
            try:
                peers[name] = {"reachable": True, **json.loads(fut.result()[0])}
            except Exception as exc:
                peers[name] = {"reachable": False, "error": str(exc)}
        me = json.loads(self.on_hello({})[0].body.to_pybytes())
        return results({"coordinator": self.party, "analyst": analyst,
                        "parties": {self.party: {"reachable": True, **me}, **peers}})

    def on_query(self, msg: dict, analyst: str, peer: str | None = None) -> list:
        """Coordinate the analyst's query (:class:`sqlmpc.party.coordinator.Coordinator`)."""
        started = time.monotonic()
        try:
            released = self.coordinator.run(msg["sql"], analyst=analyst, check=self._check_analyst,
                                             note={"peer": peer})
        except Exception as exc:
            if isinstance(exc, errors.OperationalError):
                self.peers.forget(getattr(exc, "party", None))
            return results(error_reply(exc, self.party))
        result = released.result
        meta = {"qid": released.qid, "suppressed": result.suppressed, "leakage": result.leakage,
                "min_cell_size": result.min_cell_size, "seconds": time.monotonic() - started}
        return results(meta, to_ipc(result.table))

    def take_mpc_port(self) -> int:
        """An MPC port for the next query: the next free one of MPC_PORTS ports per worker from --mpc-port.

        A fresh port per query means a failed query's lingering connections can never
        meet the next query's (a party that was killed or stalled may still hold them).
        """
        for _ in range(self.mpc_ports):
            self._mpc_turn = (self._mpc_turn + 1) % self.mpc_ports
            port = self.mpc_port + self._mpc_turn
            with socket.socket() as probe:
                try:
                    probe.bind((self.bind if self.bind != "0.0.0.0" else "", port))
                    return port
                except OSError:
                    continue
        raise errors.OperationalError(f"no free MPC port in {self.mpc_port}..{self.mpc_port + self.mpc_ports - 1}")

    # -- the query slot (one query at a time per node) ----------------------------

    def acquire(self, qid: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        with self._slot_cond:
            while self._slot is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._slot_cond.wait(left)
            self._slot = qid
            return True

    def release(self, qid: str) -> None:
        with self._slot_cond:
            if self._slot == qid:
                self._slot = None
                self._slot_cond.notify_all()

    # -- admission ------------------------------------------------------------------

    def _check_analyst(self, analyst: str) -> None:
        allowed = self.federation.policy.analysts
        if allowed is not None and analyst not in allowed:
            raise errors.QueryRefusedError(f"analyst '{analyst}' may not query this party", party=self.party)

    def admit(self, msg: dict):
        """This party's own decision on a proposal (plan hash compared by PartyNode.admit).

        A proposal must carry the plan hash (``digest``), the catalog fingerprint and k
        (``min_cell_size``): one without them is refused, never admitted unchecked."""
        missing = [name for name, field in (("the plan hash", "digest"), ("the catalog fingerprint", "fingerprint"),
                                            ("k", "min_cell_size"), ("the analyst", "analyst"), ("the SQL", "sql"))
                   if msg.get(field) in (None, "")]
        if missing:
            raise errors.QueryRefusedError(f"the proposal lacks {', '.join(missing)}: a party admits only a "
                                           "proposal it can check completely", party=self.party)
        k = msg["min_cell_size"]
        if not isinstance(k, int) or isinstance(k, bool) or not all(
                isinstance(msg[f], str) for f in ("digest", "fingerprint", "analyst", "sql")):
            raise errors.QueryRefusedError("the proposal is malformed (k must be an integer; the plan hash, "
                                           "fingerprint, analyst and SQL strings)", party=self.party)
        self._check_analyst(msg["analyst"])
        own_k = self.federation.policy.min_cell_size
        if k < own_k:
            raise errors.QueryRefusedError(
                f"local policy requires min_cell_size = {own_k}; the proposed plan uses {k}", party=self.party)
        fp = msg["fingerprint"]
        catalogs = ""
        if fp != self.federation.fingerprint:
            catalogs = (f"catalog fingerprint differs ({self.federation.fingerprint[:12]} here, {fp[:12]} at "
                        f"'{msg.get('from')}'): the parties' federation files are not identical")
        try:
            plan = self.node.admit(msg["sql"], msg["digest"])
        except errors.QueryRefusedError as exc:
            if catalogs:
                raise errors.QueryRefusedError(f"{exc.args[0].split(': ', 1)[-1]}; {catalogs}",
                                               party=self.party) from None
            raise
        except errors.PolicyError as exc:
            exc.party = self.party
            raise errors.QueryRefusedError(str(exc), party=self.party) from None
        if catalogs:
            raise errors.QueryRefusedError(catalogs, party=self.party)
        return plan

    # -- running one party's share -----------------------------------------------

    def run_mpc(self, plan, sessions: list[list[tuple[str, int]]], ledger: Ledger) -> pa.Table:
        """This party's share of the query (PartyNode.execute_plan) with TLS and a watchdog.

        ``sessions``: every party's address per MPC session (the first its own, then one per worker).
        ``ledger`` receives the openings as they happen (after a failure: those before it).
        """

        names = {i: name for name, i in self.node.index.items()}
        pid = self.node.index[self.party]
        peers = {i: n for i, n in names.items() if i != pid}

        class Session(MpcSession):
            missing: list[str] = []

            def abort(self):
                rt = self.mpc
                if rt is not None:
                    self.missing = [names[pid] for pid in sorted(runtime.lost_peers(rt))]
                super().abort()

        addresses = sessions[0]
        session = Session(pid, addresses, tls=self.tls.files if self.tls else None,
                          timeout=self.timeout, listen_host=self.bind)
        self.sessions_opened += 1
        try:
            out = self.node.execute_plan(plan, addresses, session=session, timeout=self.timeout, ledger=ledger,
                                         workers=sessions[1:], max_workers=self.workers,
                                         guard=lambda secure: watchdog.guard(secure, peers, self.timeout))
        except SessionError as exc:
            who = session.missing[0] if session.missing else None
            raise errors.PartyError(f"MPC session failed: {exc}", party=who) from None
        return out.cells

    # -- peer actions -----------------------------------------------------------------

    def on_hello(self, msg: dict) -> list:
        return results({"party": self.party, "version": version(), "fingerprint": self.federation.fingerprint,
                        "busy": self._slot is not None, "sessions_open": int(session_open()),
                        "sessions_opened": self.sessions_opened, "tls": self.tls is not None,
                        "restricted_unpickler": unpickle.installed() if runtime.loaded() else None})

    def peer_caller(self, identity: bytes | str | None, action: str, msg: dict, peer: str | None) -> str | None:
        """The party calling a peer action: the one its client certificate names (None on a
        plaintext loopback node, which knows no identities).  A certificate of the federation's CA
        that names no other party of the federation may only say ``hello``: anything else is
        refused (FlightUnauthenticatedError) and audited."""
        if self.tls is None:
            return None
        if isinstance(identity, bytes):
            identity = identity.decode(errors="replace")
        caller = next((name for name in self.federation.party_names if names_party(identity, name)), None)
        if caller is not None and caller != self.party or action == "hello":
            return caller
        reason = (f"the calling certificate names '{identity}', which is not another party of the federation"
                  if caller is None else "the calling certificate is this party's own")
        peer_refusal(self.audit, reason=reason, action=action, caller=identity or None,
                     claimed=msg.get("from"), qid=msg.get("qid"), peer=peer)
        raise flight.FlightUnauthenticatedError(reason)

    def _impostor(self, caller: str | None, claimed) -> str | None:
        """Why a message claiming to come from ``claimed`` may not come from ``caller`` (None: it may)."""
        if caller is None or (isinstance(claimed, str) and names_party(caller, claimed)):
            return None
        return f"the message claims to come from '{claimed}' but the calling certificate is '{caller}'"

    def on_propose(self, msg: dict, caller: str | None = None, peer: str | None = None) -> list:
        qid = msg.get("qid")
        claimed = msg.get("from")
        proposer = caller if caller is not None else claimed
        started = time.monotonic()
        record = {**query_record(qid, "participant", proposer, msg.get("analyst"), msg.get("sql")), "peer": peer}
        why = self._impostor(caller, claimed) or (None if isinstance(qid, str) and qid else "the proposal has no id")
        if why is None and self.federation.party(str(proposer)) is None:
            why = f"the proposal comes from '{proposer}', which is not a party of the federation"
        if why is not None:
            # Refused before it takes the query slot: who sent it is wrong, whatever it asks.
            self.audit.write({**record, "claimed": claimed, "decision": "refused", "reason": why, "outcome": "refused",
                              "duration_s": time.monotonic() - started})
            return results(error_reply(errors.QueryRefusedError(why, party=self.party), self.party))
        if (caller, qid) in self._aborted:
            return results({"error": "OperationalError", "message": "query already aborted", "party": self.party})
        if not self.acquire(qid, BUSY_WAIT):
            return results({"busy": True})
        try:
            plan = self.admit(msg)
        except Exception as exc:
            exc.stage = "admit"
            self.release(qid)
            self.audit.write({**record, "decision": "refused", "reason": str(exc), "outcome": "refused",
                              "duration_s": time.monotonic() - started})
            return results(error_reply(exc, self.party))
        timer = threading.Timer(self.timeout + 5, self._expire, (qid,))
        timer.daemon = True
        ports = [self.take_mpc_port() for _ in range(self.workers)]
        self._pending[qid] = {"plan": plan, "record": {**record, "plan_hash": plan.digest}, "started": started,
                              "timer": timer, "from": proposer, "ports": ports}
        timer.start()
        return results({"ok": True, "mpc_port": ports[0], "worker_ports": ports[1:]})

    def _expire(self, qid: str) -> None:
        p = self._pending.pop(qid, None)
        if p is not None:
            self.release(qid)
            self.audit.write({**p["record"], "decision": "accepted", "reason": None, "ledger": [],
                              "outcome": "expired", "error": "the coordinator never started the query",
                              "duration_s": time.monotonic() - p["started"]})

    def _not_proposer(self, action: str, msg: dict, caller: str | None, peer: str | None) -> list | None:
        """A refusal (audited) when ``caller`` is not the party that proposed the query ``msg`` names,
        or the message claims another sender; None when the caller may act on it."""
        qid = msg.get("qid")
        p = self._pending.get(qid) if isinstance(qid, str) else None
        why = self._impostor(caller, msg.get("from")) if "from" in msg else None
        who = caller if caller is not None else msg.get("from")     # a plaintext node knows only the claim
        if why is None and p is not None and who is not None and who != p["from"]:
            why = f"'{who}' did not propose this query ('{p['from']}' did)"
        if why is None:
            return None
        peer_refusal(self.audit, reason=why, action=action, caller=caller, claimed=msg.get("from"), qid=qid, peer=peer)
        return results(error_reply(errors.QueryRefusedError(why, party=self.party), self.party))

    def on_abort(self, msg: dict, caller: str | None = None, peer: str | None = None) -> list:
        refused = self._not_proposer("abort", msg, caller, peer)
        if refused is not None:
            return refused
        qid = msg.get("qid")
        if not isinstance(qid, str):
            return results({"ok": True})
        self._aborted.append((caller, qid))
        del self._aborted[:-1000]
        p = self._pending.pop(qid, None)
        if p is not None:
            p["timer"].cancel()
            self.release(qid)
            self.audit.write({**p["record"], "decision": "accepted", "reason": None, "ledger": [],
                              "outcome": "aborted", "error": msg.get("reason"),
                              "duration_s": time.monotonic() - p["started"]})
        return results({"ok": True})

    def mpc_sessions(self, msg: dict, ports: list[int]) -> list[list[tuple[str, int]]]:
        """The MPC sessions an ``execute`` asks for, every address checked against the federation file:
        each party's host is the host of its federation address (127.0.0.1 on a plaintext loopback node),
        this party's own ports are those it announced when it accepted; at most one session per
        port it announced.  Anything else is refused (QueryRefusedError)."""
        sessions = [msg.get("addresses"), *(msg.get("workers") or [])]
        parties = self.federation.parties
        if not 1 <= len(sessions) <= len(ports):
            raise errors.QueryRefusedError(f"the execute message asks for {len(sessions)} MPC sessions; this party "
                                           f"accepted the query with {len(ports)}", party=self.party)
        out = []
        for w, addresses in enumerate(sessions):
            if not isinstance(addresses, list) or len(addresses) != len(parties):
                raise errors.QueryRefusedError(f"the execute message's MPC session {w} does not list one address "
                                               f"per party ({len(parties)})", party=self.party)
            session = []
            for party, address in zip(parties, addresses):
                host = "127.0.0.1" if self.insecure else split_address(party.address)[0]
                valid = (isinstance(address, list) and len(address) == 2 and address[0] == host
                         and type(address[1]) is int and 0 < address[1] < 65536)
                if not valid:
                    raise errors.QueryRefusedError(
                        f"the execute message gives '{party.name}' the MPC address {address!r}; its host in the "
                        f"federation file is {host!r}", party=self.party)
                port = address[1]
                if party.name == self.party and port != ports[w]:
                    raise errors.QueryRefusedError(
                        f"the execute message gives this party the MPC port {port}; it announced {ports[w]}",
                        party=self.party)
                session.append((host, port))
            out.append(session)
        return out

    def on_execute(self, msg: dict, caller: str | None = None, peer: str | None = None) -> list:
        refused = self._not_proposer("execute", msg, caller, peer)
        if refused is not None:
            return refused
        qid = msg.get("qid")
        p = self._pending.pop(qid, None) if isinstance(qid, str) else None
        if p is None:
            return results(error_reply(errors.PartyError("no accepted proposal with this id (expired?)"),
                                       self.party))
        p["timer"].cancel()
        record = {**p["record"], "decision": "accepted", "sessions": 1 + len(msg.get("workers") or [])}
        ledger = Ledger()
        try:
            sessions = self.mpc_sessions(msg, p["ports"])
        except errors.QueryRefusedError as exc:
            # The proposer asked for MPC addresses that are not the federation's: the query ends here.
            exc.stage = "execute"
            self.release(qid)
            self.audit.write({**record, "decision": "refused", "reason": str(exc), "outcome": "refused",
                              "duration_s": time.monotonic() - p["started"]})
            return results(error_reply(exc, self.party, ledger=[]))
        try:
            with audited(self.audit, record, since=p["started"]):
                self._running[qid] = (record, ledger)
                try:
                    cells = self.run_mpc(p["plan"], sessions, ledger)
                finally:
                    self._running.pop(qid, None)
                    record["ledger"] = opened(ledger.entries)
                    self.release(qid)
                ipc = to_ipc(cells)
                record.update(outcome="ok", cells=cells.num_rows, cells_sha256=hashlib.sha256(ipc).hexdigest())
        except Exception as exc:
            return results(error_reply(exc, self.party, ledger=record["ledger"]))
        return results({"ok": True, "ledger": record["ledger"]}, ipc)

def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Endpoint(flight.FlightServerBase):
    def __init__(self, location: str, node: NodeServer, kind: str, **kwargs):
        super().__init__(location, **kwargs)
        self.node = node
        self.kind = kind

    def do_action(self, context, action):
        msg = json.loads(action.body.to_pybytes() or b"{}")
        node = self.node
        if self.kind == "peer":
            if action.type == "hello":
                return node.on_hello(msg)
            handler = {"propose": node.on_propose, "execute": node.on_execute, "abort": node.on_abort}.get(action.type)
            if handler is None:
                raise flight.FlightServerError(f"unknown peer action '{action.type}'")
            if not isinstance(msg, dict):
                raise flight.FlightServerError(f"peer action '{action.type}': the body must be a JSON object")
            caller = node.peer_caller(context.peer_identity(), action.type, msg, context.peer())
            return handler(msg, caller, context.peer())
        caller = context.get_middleware("auth")
        if caller is None or caller.name is None:
            failure = caller.failure if caller is not None else "not authenticated"
            node.auth_failed(failure, action.type, context.peer(), caller.client if caller else None)
            raise flight.FlightUnauthenticatedError(failure)
        analyst = caller.name
        if action.type == "query":
            return node.on_query(msg, analyst, context.peer())
        if action.type == "status":
            return node.on_status(analyst)
        if action.type == "catalog":
            return results({"toml": shared_text(node.federation), "fingerprint": node.federation.fingerprint})
        raise flight.FlightServerError(f"unknown action '{action.type}'")

    def list_actions(self, context):
        if self.kind == "peer":
            return [("hello", ""), ("propose", ""), ("execute", ""), ("abort", "")]
        return [("query", "run one SQL query; returns JSON metadata and the result as Arrow IPC"),
                ("status", "reachability, versions and catalog fingerprints of all parties"),
                ("catalog", "the shared federation file (tables, columns, roles, policy; no data)")]


def serve(args) -> int:
    """Entry point of ``sqlmpc serve`` (blocks until interrupted)."""

    faulthandler.register(signal.SIGUSR1, all_threads=True)   # kill -USR1 <pid>: stacks to stderr
    t0 = time.perf_counter()
    node = NodeServer(args.federation, args.party, local_policy=args.policy, keys=args.keys, tokens=args.tokens,
                      insecure_loopback=args.insecure_loopback, bind=args.bind, analyst_port=args.analyst_port,
                      mpc_port=args.mpc_port, state_dir=args.state, timeout=args.timeout, workers=args.workers)
    node.start()
    mode = "PLAINTEXT on 127.0.0.1 (--insecure-loopback)" if node.insecure else "mutual TLS / TLS + token"
    print(f"sqlmpc node '{node.party}' ready in {time.perf_counter() - t0:.2f} s: peers on port {node.port}, "
          f"analysts on port {node.analyst_port}, MPC on port {node.mpc_port}; {node.workers} worker"
          f"{'s' if node.workers > 1 else ''}; {mode}; "
          f"audit log {node.audit.path}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    print(f"sqlmpc node '{node.party}' stopping", file=sys.stderr, flush=True)
    node.audit_stop()
    threading.Thread(target=node.shutdown, daemon=True).start()
    time.sleep(1.0)   # let in-flight replies go out; an MPC session in progress fails at the peers
    os._exit(0)
