"""A long-running party node on the network: ``sqlmpc serve``.

Three endpoints per node (ports default to the federation address's port P):

* peer control, P (the federation ``address``): Arrow Flight with mutual TLS;
  only holders of a certificate from the federation's CA get through.  Actions
  (JSON bodies): ``hello``, ``propose``, ``execute``, ``abort``.
* analyst control, ``--analyst-port`` (default P + 1): Arrow Flight with TLS and
  a bearer token (``authorization: Bearer ...``).  Actions: ``query``, ``status``.
* MPC data plane, ``--mpc-port`` (default P + 2): MPyC's own TCP channels with
  TLS, open only while a query runs (a fresh MpcSession per query).

The node that receives an analyst's query coordinates it: it parses, binds and
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

import hashlib
import itertools
import json
import socket
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

from sqlmpc import errors
from sqlmpc.mpc.reveal import Ledger
from sqlmpc.party.audit import AuditLog, audited, auth_failure, opened, query_record
from sqlmpc.party.wire import error_reply, from_ipc, rebuild, to_ipc

BUSY_WAIT = 2.0        # how long a peer waits for its slot before answering "busy"


def version() -> str:
    import sqlmpc
    return getattr(sqlmpc, "__version__", "unknown")


# -- wire helpers ----------------------------------------------------------------

def results(*items) -> list[flight.Result]:
    out = []
    for item in items:
        data = item if isinstance(item, (bytes, bytearray)) else json.dumps(item, default=str).encode()
        out.append(flight.Result(pa.py_buffer(data)))
    return out


def call(client: flight.FlightClient, action: str, body: dict, *, timeout: float | None = None,
         headers: list | None = None) -> list[bytes]:
    options = flight.FlightCallOptions(timeout=timeout, headers=headers or [])
    return [r.body.to_pybytes() for r in client.do_action(flight.Action(action, json.dumps(body).encode()),
                                                          options=options)]


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


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
                 mpc_port: int | None = None, state_dir: str | Path | None = None, timeout: float = 30.0):
        from sqlmpc.catalog import load_federation
        from sqlmpc.party.node import PartyNode
        from sqlmpc.party import watchdog

        self.federation = load_federation(federation_path, local_policy=local_policy)
        self.node = PartyNode(self.federation, party)
        self.party = self.node.party
        self.timeout = timeout
        self.tls: Tls | None = None
        self.tokens: dict[str, str] | None = None
        if keys is not None:
            from sqlmpc.mpc.session import TlsFiles
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
            from sqlmpc.party.keys import load_tokens
            self.tokens = load_tokens(tokens)
        elif self.tls is not None:
            raise errors.ConfigError("TLS without analyst tokens: give --tokens tokens.json")
        self.insecure = self.tls is None
        self.bind = "127.0.0.1" if self.insecure else bind
        host, port = _split(self.federation.party(self.party).address)
        self.port = port
        self.analyst_port = analyst_port or port + 1
        self.mpc_port = mpc_port or port + 2       # first of MPC_PORTS ports, one per query in turn
        self._mpc_turn = -1
        self.peers = {p.name: _split(p.address) for p in self.federation.parties if p.name != self.party}
        state = Path(state_dir) if state_dir else Path("sqlmpc-state") / self.party
        self.audit = AuditLog(state / "audit.jsonl")
        self._clients: dict[str, flight.FlightClient] = {}
        self._clients_lock = threading.Lock()
        self._slot_cond = threading.Condition()
        self._slot: str | None = None
        self._pending: dict[str, dict] = {}
        self._aborted: list[str] = []
        self._running: dict[str, tuple[dict, Ledger]] = {}     # qid -> audit record and ledger, while it runs
        self._pool = ThreadPoolExecutor(max_workers=16 + 4 * len(self.peers), thread_name_prefix="peer")
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
                                         middleware={"auth": _TokenAuth(self.tokens, self.auth_failed)},
                                         **tls_args)
        for s in (self._peer_server, self._analyst_server):
            threading.Thread(target=s.serve, daemon=True).start()

    def audit_stop(self) -> None:
        """Record the queries this stopping node leaves behind (with what they opened so far),
        then close the audit log: their own threads end with the process."""
        for record, ledger in list(self._running.values()):
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
        self._pool.shutdown(wait=False, cancel_futures=True)

    def auth_failed(self, reason: str, action: str | None, peer: str | None, client: str | None) -> None:
        """Audit a refused analyst call: why, which action, from where (never the token)."""
        auth_failure(self.audit, reason=reason, endpoint="analyst", action=action, peer=peer, client=client)

    # -- peers ----------------------------------------------------------------

    def client(self, peer: str) -> flight.FlightClient:
        with self._clients_lock:
            c = self._clients.get(peer)
            if c is None:
                host, port = self.peers[peer]
                if self.tls is None:
                    c = flight.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
                else:
                    c = flight.FlightClient(f"grpc+tls://{host}:{port}", tls_root_certs=self.tls.ca,
                                            cert_chain=self.tls.cert, private_key=self.tls.key,
                                            override_hostname=peer.lower())
                self._clients[peer] = c
            return c

    def _peer_call(self, peer: str, action: str, body: dict, timeout: float | None) -> list[bytes]:
        try:
            return call(self.client(peer), action, body, timeout=timeout)
        except flight.FlightError as exc:
            self._forget(peer)
            raise errors.PartyError(f"unreachable or failed on the control channel: {_short(exc)}",
                                    party=peer) from None

    def take_mpc_port(self) -> int:
        """The MPC port for the next query: the next free one of MPC_PORTS ports from --mpc-port.

        A fresh port per query means a failed query's lingering connections can never
        meet the next query's (a party that was killed or stalled may still hold them).
        """
        for _ in range(MPC_PORTS):
            self._mpc_turn = (self._mpc_turn + 1) % MPC_PORTS
            port = self.mpc_port + self._mpc_turn
            with socket.socket() as probe:
                try:
                    probe.bind((self.bind if self.bind != "0.0.0.0" else "", port))
                    return port
                except OSError:
                    continue
        raise errors.OperationalError(f"no free MPC port in {self.mpc_port}..{self.mpc_port + MPC_PORTS - 1}")

    def _forget(self, peer: str | None) -> None:
        """Drop a peer's control channel: a restarted peer gets a fresh connection, not gRPC's backoff."""
        with self._clients_lock:
            self._clients.pop(peer, None)

    # -- the query slot (one query at a time per node) ----------------------------

    def _acquire(self, qid: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        with self._slot_cond:
            while self._slot is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._slot_cond.wait(left)
            self._slot = qid
            return True

    def _release(self, qid: str) -> None:
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

    def run_mpc(self, plan, addresses: list[tuple[str, int]], ledger: Ledger) -> pa.Table:
        """This party's share of the query (PartyNode.execute_plan) with TLS and a watchdog.

        ``ledger`` receives the openings as they happen (after a failure: those before it).
        """
        from sqlmpc.mpc.session import MpcSession, SessionError
        from sqlmpc.party import watchdog

        names = {i: name for name, i in self.node.index.items()}
        pid = self.node.index[self.party]
        peers = {i: n for i, n in names.items() if i != pid}

        class Session(MpcSession):
            missing: list[str] = []

            def abort(self):
                rt = self.mpc
                if rt is not None:
                    self.missing = [names[p.pid] for p in rt.parties
                                    if p.pid != rt.pid and p.protocol is None]
                super().abort()

        session = Session(pid, addresses, tls=self.tls.files if self.tls else None,
                          timeout=self.timeout, listen_host=self.bind)
        self.sessions_opened += 1
        try:
            out = self.node.execute_plan(plan, addresses, session=session, timeout=self.timeout, ledger=ledger,
                                         guard=lambda secure: watchdog.guard(secure, peers, self.timeout))
        except SessionError as exc:
            who = session.missing[0] if session.missing else None
            raise errors.PartyError(f"MPC session failed: {exc}", party=who) from None
        return out.cells

    # -- peer actions -----------------------------------------------------------------

    def on_hello(self, msg: dict) -> list:
        from sqlmpc.mpc import runtime, unpickle
        from sqlmpc.mpc.session import session_open
        return results({"party": self.party, "version": version(), "fingerprint": self.federation.fingerprint,
                        "busy": self._slot is not None, "sessions_open": int(session_open()),
                        "sessions_opened": self.sessions_opened, "tls": self.tls is not None,
                        "restricted_unpickler": unpickle.installed() if runtime.loaded() else None})

    def on_propose(self, msg: dict) -> list:
        qid = msg["qid"]
        if qid in self._aborted:
            return results({"error": "OperationalError", "message": "query already aborted", "party": self.party})
        if not self._acquire(qid, BUSY_WAIT):
            return results({"busy": True})
        record = query_record(qid, "participant", msg.get("from"), msg.get("analyst"), msg.get("sql"))
        started = time.monotonic()
        try:
            plan = self.admit(msg)
        except Exception as exc:
            self._release(qid)
            self.audit.write({**record, "decision": "refused", "reason": str(exc), "outcome": "refused",
                              "duration_s": time.monotonic() - started})
            return results(error_reply(exc, self.party))
        timer = threading.Timer(self.timeout + 5, self._expire, (qid,))
        timer.daemon = True
        self._pending[qid] = {"plan": plan, "record": {**record, "plan_hash": plan.digest}, "started": started,
                              "timer": timer}
        timer.start()
        return results({"ok": True, "mpc_port": self.take_mpc_port()})

    def _expire(self, qid: str) -> None:
        p = self._pending.pop(qid, None)
        if p is not None:
            self._release(qid)
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
            self._release(qid)
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
        record = {**p["record"], "decision": "accepted"}
        ledger = Ledger()
        try:
            with audited(self.audit, record, since=p["started"]):
                self._running[qid] = (record, ledger)
                try:
                    cells = self.run_mpc(p["plan"], [tuple(a) for a in msg["addresses"]], ledger)
                finally:
                    self._running.pop(qid, None)
                    record["ledger"] = opened(ledger.entries)
                    self._release(qid)
                ipc = to_ipc(cells)
                record.update(outcome="ok", cells=cells.num_rows, cells_sha256=hashlib.sha256(ipc).hexdigest())
        except Exception as exc:
            return results(error_reply(exc, self.party))
        return results({"ok": True, "ledger": record["ledger"]}, ipc)

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
        from sqlmpc.plan.compile import compile
        from sqlmpc.result import finish

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
                    addresses = [(self.peers[p.name][0] if p.name != self.party else _split(p.address)[0],
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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- Flight plumbing ----------------------------------------------------------------

class _Analyst(flight.ServerMiddleware):
    """The caller on the analyst endpoint: its name, or why its authentication failed."""

    def __init__(self, name: str | None, failure: str | None = None, client: str | None = None):
        self.name = name
        self.failure = failure
        self.client = client


class _TokenAuth(flight.ServerMiddlewareFactory):
    """Bearer tokens: sha256(token) -> analyst name; None = no tokens (loopback development only).

    A failed authentication is audited (``on_failure``), never with the token.  Only
    ``do_action`` calls get through with a failure, so that ``_Endpoint.do_action``
    can log the caller's address before refusing; every other call is refused here.
    """

    def __init__(self, tokens: dict[str, str] | None, on_failure):
        self.tokens = tokens
        self.on_failure = on_failure

    def start_call(self, info, headers):
        if self.tokens is None:
            return _Analyst("anonymous")
        name, failure = self.authenticate(headers)
        if failure is None:
            return _Analyst(name)
        client = _header(headers, "user-agent")
        if info.method == flight.FlightMethod.DO_ACTION:
            return _Analyst(None, failure, client)
        self.on_failure(failure, str(info.method), None, client)
        raise flight.FlightUnauthenticatedError(failure)

    def authenticate(self, headers) -> tuple[str | None, str | None]:
        """(analyst, None) for a known token, else (None, why not)."""
        import hmac
        value = _header(headers, "authorization") or ""
        if not value.startswith("Bearer "):
            return None, "missing bearer token"
        digest = hashlib.sha256(value[len("Bearer "):].strip().encode()).hexdigest()
        for known, name in self.tokens.items():
            if hmac.compare_digest(known, digest):
                return name, None
        return None, "invalid analyst token"


def _header(headers: dict, name: str) -> str | None:
    values = headers.get(name) or headers.get(name.title()) or []
    value = values[0] if values else None
    return value.decode(errors="replace") if isinstance(value, bytes) else value


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
    import faulthandler
    import signal
    import sys

    faulthandler.register(signal.SIGUSR1, all_threads=True)   # kill -USR1 <pid>: stacks to stderr
    t0 = time.perf_counter()
    node = NodeServer(args.federation, args.party, local_policy=args.policy, keys=args.keys, tokens=args.tokens,
                      insecure_loopback=args.insecure_loopback, bind=args.bind, analyst_port=args.analyst_port,
                      mpc_port=args.mpc_port, state_dir=args.state, timeout=args.timeout)
    node.start()
    mode = "PLAINTEXT on 127.0.0.1 (--insecure-loopback)" if node.insecure else "mutual TLS / TLS + token"
    print(f"sqlmpc node '{node.party}' ready in {time.perf_counter() - t0:.2f} s: peers on port {node.port}, "
          f"analysts on port {node.analyst_port}, MPC on port {node.mpc_port}; {mode}; "
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
    import os
    os._exit(0)
