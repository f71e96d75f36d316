"""A long-running party node on the network: ``sqlmpc serve``.

Three endpoints per node (ports default to the federation address's port P):

* peer control, P (the federation ``address``): Arrow Flight with mutual TLS;
  only holders of a certificate from the federation's CA get through.  Actions
  (JSON bodies): ``hello``, ``propose``, ``execute``, ``abort``.
* analyst control, ``--analyst-port`` (default P + 1): Arrow Flight with TLS and
  a bearer token (``authorization: Bearer ...``).  Actions: ``query``, ``status``.
* MPC data plane, ``--mpc-port`` (default P + 2): MPyC's own TCP channels with
  TLS, open only while a query runs (a fresh MpcSession per query).

The node that receives an analyst's query coordinates it (the one coordinator of
:mod:`sqlmpc.party.coordinator`, over :mod:`sqlmpc.party.peers`): it parses, binds and
plans, proposes {sql, digest, catalog fingerprint, k, analyst} to every peer;
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
from sqlmpc.catalog import load_federation
from sqlmpc.mpc import runtime, unpickle
from sqlmpc.mpc.reveal import Ledger
from sqlmpc.mpc.session import MpcSession, SessionError, TlsFiles, session_open
from sqlmpc.mpc.workers import start_fork_server
from sqlmpc.party import watchdog
from sqlmpc.party.audit import AuditLog, audited, auth_failure, opened, query_record
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

        self.federation = load_federation(federation_path, local_policy=local_policy)
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
                           TlsFiles(str(cert), str(key), str(ca)))
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
        self._aborted: list[str] = []
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
        """This party's own decision on a proposal (plan hash compared by PartyNode.admit)."""
        self._check_analyst(msg.get("analyst", ""))
        k = msg.get("min_cell_size")
        own_k = self.federation.policy.min_cell_size
        if k is not None and k < own_k:
            raise errors.QueryRefusedError(
                f"local policy requires min_cell_size = {own_k}; the proposed plan uses {k}", party=self.party)
        fp = msg.get("fingerprint")
        catalogs = ""
        if fp and fp != self.federation.fingerprint:
            catalogs = (f"catalog fingerprint differs ({self.federation.fingerprint[:12]} here, {fp[:12]} at "
                        f"'{msg.get('from')}'): the parties' federation files are not identical")
        try:
            plan = self.node.admit(msg["sql"], msg.get("digest"))
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

    def on_propose(self, msg: dict) -> list:
        qid = msg["qid"]
        if qid in self._aborted:
            return results({"error": "OperationalError", "message": "query already aborted", "party": self.party})
        if not self.acquire(qid, BUSY_WAIT):
            return results({"busy": True})
        record = query_record(qid, "participant", msg.get("from"), msg.get("analyst"), msg.get("sql"))
        started = time.monotonic()
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
        self._pending[qid] = {"plan": plan, "record": {**record, "plan_hash": plan.digest}, "started": started,
                              "timer": timer}
        timer.start()
        return results({"ok": True, "mpc_port": self.take_mpc_port(),
                        "worker_ports": [self.take_mpc_port() for _ in range(self.workers - 1)]})

    def _expire(self, qid: str) -> None:
        p = self._pending.pop(qid, None)
        if p is not None:
            self.release(qid)
            self.audit.write({**p["record"], "decision": "accepted", "reason": None, "ledger": [],
                              "outcome": "expired", "error": "the coordinator never started the query",
                              "duration_s": time.monotonic() - p["started"]})

    def on_abort(self, msg: dict) -> list:
        qid = msg["qid"]
        self._aborted.append(qid)
        del self._aborted[:-1000]
        p = self._pending.pop(qid, None)
        if p is not None:
            p["timer"].cancel()
            self.release(qid)
            self.audit.write({**p["record"], "decision": "accepted", "reason": None, "ledger": [],
                              "outcome": "aborted", "error": msg.get("reason"),
                              "duration_s": time.monotonic() - p["started"]})
        return results({"ok": True})

    def on_execute(self, msg: dict) -> list:
        qid = msg["qid"]
        p = self._pending.pop(qid, None)
        if p is None:
            return results(error_reply(errors.PartyError("no accepted proposal with this id (expired?)"),
                                       self.party))
        p["timer"].cancel()
        record = {**p["record"], "decision": "accepted", "sessions": 1 + len(msg.get("workers", []))}
        ledger = Ledger()
        try:
            with audited(self.audit, record, since=p["started"]):
                self._running[qid] = (record, ledger)
                try:
                    sessions = [msg["addresses"], *msg.get("workers", [])]
                    cells = self.run_mpc(p["plan"], [[tuple(a) for a in s] for s in sessions], ledger)
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
            handler = {"hello": node.on_hello, "propose": node.on_propose, "execute": node.on_execute,
                       "abort": node.on_abort}.get(action.type)
            if handler is None:
                raise flight.FlightServerError(f"unknown peer action '{action.type}'")
            return handler(msg)
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
            return results({"toml": Path(node.federation.path).read_text(),
                            "fingerprint": node.federation.fingerprint})
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
