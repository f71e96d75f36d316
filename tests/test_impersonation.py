"""A party cannot pose as another: attacks by a party that holds its own certificate from the
federation's CA (the insurer) against three TLS nodes on loopback.

Each test is the attack itself, written so that it would succeed if the check it meets broke:
the control channel (Arrow Flight, mutual TLS) knows a caller by its certificate, a proposal must
carry everything a party checks, only the proposer may start its query, MPC addresses come from
the federation file, and every MPC connection authenticates the party at its position, both ways.
A peer that accepts the MPC connection and then stays silent fails the query within the timeout.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path

import pyarrow.flight as flight
import pytest
from cryptography import x509

import sqlmpc
from sqlmpc.catalog import load_federation
from sqlmpc.party.keys import init_keys
from sqlmpc.plan.compile import compile

from test_network import PARTIES, QUERIES, TIMEOUT, Federation

pytestmark = pytest.mark.mpc

REGIONS = "SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region"
MARGIN = 4.0          # seconds beyond the node's timeout a failure may take to come back


@pytest.fixture(scope="module")
def fed(demo_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("impersonation")
    f = Federation(demo_path, work)
    f.tokens = init_keys(load_federation(f.path), work / "keys")
    f.keys = work / "keys"
    f.catalog = load_federation(f.path)
    f.start(extra=["--keys", str(f.keys)])
    yield f
    f.stop()


# -- the attacker's tools ------------------------------------------------------------------------

def control(fed, target: str, *, cert_of: str = "insurer") -> flight.FlightClient:
    """A Flight client to ``target``'s peer endpoint presenting ``cert_of``'s certificate."""
    keys = fed.keys / cert_of
    return flight.FlightClient(f"grpc+tls://127.0.0.1:{fed.ports[target][0]}",
                               tls_root_certs=(fed.keys / "ca.pem").read_bytes(),
                               cert_chain=(keys / "cert.pem").read_bytes(),
                               private_key=(keys / "key.pem").read_bytes(), override_hostname=target)


def act(client: flight.FlightClient, action: str, body: dict, timeout: float = 10.0) -> dict:
    out = list(client.do_action(flight.Action(action, json.dumps(body).encode()),
                                options=flight.FlightCallOptions(timeout=timeout)))
    return json.loads(out[0].body.to_pybytes())


def proposal(fed, sql: str = REGIONS, **changes) -> dict:
    """A complete, honest proposal from the insurer; ``changes`` forge or drop (None) fields."""
    plan = compile(sql, fed.catalog)
    body = {"qid": uuid.uuid4().hex, "from": "insurer", "analyst": "analyst", "sql": plan.sql,
            "digest": plan.digest, "fingerprint": fed.catalog.fingerprint, "min_cell_size": plan.min_cell_size}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def records_since(fed, party: str, before: int, timeout: float = 5.0) -> list[dict]:
    """The audit records ``party`` wrote after its first ``before`` (waiting for at least one)."""
    deadline = time.monotonic() + timeout
    while len(fed.audit(party)) <= before:
        assert time.monotonic() < deadline, f"no new audit record at {party}"
        time.sleep(0.05)
    return fed.audit(party)[before:]


def query_works(fed, party: str = "hospital") -> None:
    """The analyst's next query on ``party`` succeeds (its query slot is free again)."""
    with sqlmpc.connect(fed.url(party, scheme="sqlmpc"), token=fed.tokens["analyst"],
                        ca=str(fed.keys / "ca.pem")) as con:
        rows = con.execute(REGIONS).fetchall()
    assert rows and all(n >= 10 for _, n in rows)


class Listener:
    """An MPC listener of the attacker's on loopback: TLS with ``cert_of``'s certificate (or none:
    ``tls=False`` accepts TCP and never answers the handshake).  It records what it received and
    otherwise stays silent, holding every connection open."""

    def __init__(self, fed, cert_of: str = "insurer", *, tls: bool = True):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.context = None
        if tls:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.context.load_cert_chain(fed.keys / cert_of / "cert.pem", fed.keys / cert_of / "key.pem")
            self.context.load_verify_locations(fed.keys / "ca.pem")
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.received = bytearray()
        self.accepted = 0
        self.conns = []
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
                self.conns.append(conn)
            while data := conn.recv(65536):
                self.received.extend(data)
        except OSError:
            pass

    def close(self):
        self.closed.set()
        for c in [self.sock, *self.conns]:
            try:
                c.close()
            except OSError:
                pass


def accepted(fed, target: str, **changes) -> tuple[flight.FlightClient, dict, dict]:
    """The insurer proposes honestly to ``target`` (which accepts): its client, proposal and reply."""
    client = control(fed, target)
    body = proposal(fed, **changes)
    reply = act(client, "propose", body)
    assert reply.get("ok"), reply
    return client, body, reply


# -- the control channel: a caller is the party its certificate names ------------------------------

def test_a_party_certificate_names_its_party_first(fed, tmp_path):
    """The identity both channels check is a certificate's first subjectAltName (gRPC's peer identity):
    `sqlmpc keys init` puts the party's name there even when its host name sorts before it."""
    parties = tuple(dataclasses.replace(p, address=f"aaa-{p.name}.example:7000") for p in fed.catalog.parties)
    init_keys(dataclasses.replace(fed.catalog, parties=parties), tmp_path)
    for p in parties:
        cert = x509.load_pem_x509_certificate((tmp_path / p.name / "cert.pem").read_bytes())
        names = [n.value for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
        assert names[0] == p.name.lower() and f"aaa-{p.name}.example" in names, names


def test_forged_from_is_refused_and_audited(fed):
    """The insurer's certificate, a proposal `from = "bureau"` by analyst mallory: refused, and the
    audit names the insurer as the caller and bureau as what it claimed."""
    before = len(fed.audit("hospital"))
    reply = act(control(fed, "hospital"), "propose", proposal(fed, **{"from": "bureau", "analyst": "mallory"}))
    assert reply.get("error") == "QueryRefusedError" and "ok" not in reply, reply
    assert "'bureau'" in reply["message"] and "'insurer'" in reply["message"]
    (record,) = records_since(fed, "hospital", before)
    assert record["decision"] == "refused" and record["outcome"] == "refused", record
    assert record["coordinator"] == "insurer" and record["claimed"] == "bureau", record
    query_works(fed)


def test_execute_and_abort_only_from_the_proposer(fed):
    """The insurer's accepted query at the hospital cannot be started (or dropped) by the bureau, nor
    by the insurer claiming to be someone else; the proposer itself still can."""
    client, body, reply = accepted(fed, "hospital")
    before = len(fed.audit("hospital"))
    addresses = [["127.0.0.1", reply["mpc_port"]], ["127.0.0.1", 1], ["127.0.0.1", 2]]
    bureau = control(fed, "hospital", cert_of="bureau")
    refused = act(bureau, "execute", {"qid": body["qid"], "addresses": addresses})
    assert refused.get("error") == "QueryRefusedError" and "did not propose" in refused["message"], refused
    dropped = act(bureau, "abort", {"qid": body["qid"], "reason": "mine now"})
    assert dropped.get("error") == "QueryRefusedError", dropped
    forged = act(client, "execute", {"qid": body["qid"], "from": "bureau", "addresses": addresses})
    assert forged.get("error") == "QueryRefusedError" and "claims to come from 'bureau'" in forged["message"]
    records = records_since(fed, "hospital", before)
    assert [(r["event"], r["action"], r["caller"]) for r in records] == [
        ("peer action refused", "execute", "bureau"), ("peer action refused", "abort", "bureau"),
        ("peer action refused", "execute", "insurer")], records
    assert all(r["qid"] == body["qid"] for r in records) and records[2]["claimed"] == "bureau"
    assert act(client, "abort", {"qid": body["qid"], "from": "insurer", "reason": "done"}) == {"ok": True}
    assert records_since(fed, "hospital", before + 3)[-1]["outcome"] == "aborted"
    query_works(fed)


def test_a_certificate_that_names_no_other_party_is_refused(fed):
    """The hospital's own certificate (the CA signed it, but a node is never its own peer)."""
    before = len(fed.audit("hospital"))
    with pytest.raises(flight.FlightUnauthenticatedError, match="this party's own"):
        act(control(fed, "hospital", cert_of="hospital"), "propose", proposal(fed, **{"from": "hospital"}))
    (record,) = records_since(fed, "hospital", before)
    assert record["event"] == "peer action refused" and record["caller"] == "hospital", record


# -- a proposal carries everything a party checks ------------------------------------------------------

@pytest.mark.parametrize("field", ["digest", "fingerprint", "min_cell_size"])
def test_proposal_without_a_check_is_refused(fed, field):
    before = len(fed.audit("hospital"))
    reply = act(control(fed, "hospital"), "propose", proposal(fed, **{field: None}))
    assert reply.get("error") == "QueryRefusedError" and "lacks" in reply["message"], reply
    (record,) = records_since(fed, "hospital", before)
    assert record["decision"] == "refused" and "lacks" in record["reason"], record
    query_works(fed)             # the refusal freed the slot at once


# -- MPC addresses come from the federation file ---------------------------------------------------------

def test_execute_with_foreign_addresses_is_refused(fed):
    """The proposer names its own listeners' host for the other parties: refused before any connection."""
    listener = Listener(fed)
    try:
        client, body, reply = accepted(fed, "hospital")
        before = len(fed.audit("hospital"))
        addresses = [["127.0.0.1", reply["mpc_port"]], ["127.0.0.2", listener.port], ["localhost", listener.port]]
        refused = act(client, "execute", {"qid": body["qid"], "from": "insurer", "addresses": addresses})
        assert refused.get("error") == "QueryRefusedError" and "federation file" in refused["message"], refused
        (record,) = records_since(fed, "hospital", before)
        assert record["qid"] == body["qid"] and record["outcome"] == "refused", record
        assert "127.0.0.2" in record["reason"]
        time.sleep(0.5)
        assert listener.accepted == 0            # nobody connected to it
    finally:
        listener.close()
    query_works(fed)


# -- MPC: every connection authenticates the party at its position ------------------------------------------

def test_mpc_listener_with_another_partys_certificate(fed):
    """Connecting side: the insurer's listeners at the insurer's and the bureau's positions, both with
    the insurer's certificate.  The hospital refuses the one at the bureau's position before it sends it
    anything (no pid, no PRSS key) and fails the query at once."""
    own, posing = Listener(fed), Listener(fed)
    try:
        client, body, reply = accepted(fed, "hospital")
        before = len(fed.audit("hospital"))
        addresses = [["127.0.0.1", reply["mpc_port"]], ["127.0.0.1", own.port], ["127.0.0.1", posing.port]]
        t0 = time.monotonic()
        failed = act(client, "execute", {"qid": body["qid"], "from": "insurer", "addresses": addresses},
                     timeout=TIMEOUT + 30)
        seconds = time.monotonic() - t0
        print(f"refused after {seconds:.2f} s (local stage included): {failed.get('message')}")
        assert "error" in failed, failed
        assert "bureau" in failed["message"] and "certificate" in failed["message"], failed
        assert seconds < TIMEOUT, seconds          # at once, not after the connect timeout
        assert posing.accepted >= 1 and bytes(posing.received) == b""
        (record,) = records_since(fed, "hospital", before)
        assert record["qid"] == body["qid"] and record["outcome"] == "failed", record
        assert "certificate of 'insurer', not of 'bureau'" in record["error"], record
    finally:
        own.close()
        posing.close()
    query_works(fed)


def test_mpc_client_announcing_another_partys_position(fed):
    """Accepting side: the insurer connects to the bureau's MPC port with its own certificate and
    announces position 0 (the hospital's).  The bureau refuses it and fails the query at once."""
    client, body, reply = accepted(fed, "bureau")
    before = len(fed.audit("bureau"))
    port = reply["mpc_port"]
    addresses = [["127.0.0.1", 1], ["127.0.0.1", 2], ["127.0.0.1", port]]
    box = {}

    def execute():
        box["reply"] = act(client, "execute", {"qid": body["qid"], "from": "insurer", "addresses": addresses},
                           timeout=TIMEOUT + 30)
        box["ended"] = time.monotonic()

    t = threading.Thread(target=execute)
    t.start()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(fed.keys / "ca.pem"))
    context.load_cert_chain(fed.keys / "insurer" / "cert.pem", fed.keys / "insurer" / "key.pem")
    deadline = time.monotonic() + TIMEOUT
    while True:                 # until the bureau listens (after its local stage)
        try:
            sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=2),
                                       server_hostname="bureau")
            break
        except OSError:
            assert time.monotonic() < deadline, "the bureau never listened"
            time.sleep(0.02)
    sent = time.monotonic()
    sock.sendall((0).to_bytes(2, "little") + bytes(64))      # "I am party 0", then anything
    t.join(TIMEOUT + 30)
    sock.close()
    failed = box["reply"]
    print(f"refused {box['ended'] - sent:.2f} s after the forged pid: {failed.get('message')}")
    assert "error" in failed and "hospital" in failed["message"] and "insurer" in failed["message"], failed
    assert box["ended"] - sent < TIMEOUT, box["ended"] - sent
    (record,) = records_since(fed, "bureau", before)
    assert record["qid"] == body["qid"] and record["outcome"] == "failed", record
    assert "certificate of 'insurer', not of 'hospital'" in record["error"], record
    query_works(fed, "bureau")


# -- a silent peer ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tls", [True, False], ids=["after-tls", "before-tls"])
def test_silent_mpc_peer_fails_the_query_within_the_timeout(fed, tls):
    """The insurer coordinates a query at the hospital and the bureau; its MPC listener accepts their
    connections and then says nothing (``after-tls``: completes the handshake with its own certificate;
    ``before-tls``: never answers the handshake).  Both fail within the timeout, and their next query runs."""
    silent = Listener(fed, tls=tls)
    try:
        client, body, hospital = accepted(fed, "hospital")
        bureau_client = control(fed, "bureau")
        bureau = act(bureau_client, "propose", body)
        assert bureau.get("ok"), bureau
        addresses = [["127.0.0.1", hospital["mpc_port"]], ["127.0.0.1", silent.port],
                     ["127.0.0.1", bureau["mpc_port"]]]
        box = {}

        def execute(name, c):
            box[name] = act(c, "execute", {"qid": body["qid"], "from": "insurer", "addresses": addresses},
                            timeout=TIMEOUT + 60)
            box[f"{name}-seconds"] = time.monotonic() - t0

        t0 = time.monotonic()
        threads = [threading.Thread(target=execute, args=a) for a in (("hospital", client),
                                                                      ("bureau", bureau_client))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT + 60)
        print({k: v if k.endswith("seconds") else v.get("message") for k, v in box.items()})
        for name in ("hospital", "bureau"):
            assert "error" in box[name], box
            assert box[f"{name}-seconds"] < TIMEOUT + MARGIN, box
        assert silent.accepted >= 1
    finally:
        silent.close()
    query_works(fed, "hospital")
    query_works(fed, "bureau")
