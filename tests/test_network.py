"""Party nodes over the network: three `sqlmpc serve` processes on loopback."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pyarrow.flight as flight
import pytest
import tomli_w

import sqlmpc
from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.mpc import unpickle
from sqlmpc.oracle import run_oracle
from sqlmpc.party.client import RemoteConnection
from sqlmpc.party.faults import FAIL_AFTER_OPENINGS, PAUSE_AFTER_OPENINGS, PAUSE_FILE
from sqlmpc.party.keys import init_keys
from sqlmpc.result import Result

from mpc_parties import free_ports

pytestmark = pytest.mark.mpc

QUERIES = Path(__file__).parent.parent / "queries"
PARTIES = ("hospital", "insurer", "bureau")
TIMEOUT = 8.0


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def assert_equals_oracle(result, sql, federation, union_db):
    oracle = run_oracle(sql, federation, union_db)
    assert result.columns == oracle.columns
    assert result.suppressed == oracle.suppressed
    assert len(result.rows()) == len(oracle.rows())
    for got, want in zip(result.rows(), oracle.rows()):
        assert all(same(a, b) for a, b in zip(got, want)), (got, want)


class Federation:
    """A federation file with fresh loopback ports and one `sqlmpc serve` process per party."""

    def __init__(self, demo_path: Path, workdir: Path, *, tamper: str | None = None):
        self.workdir = workdir
        ports = free_ports(3 * len(PARTIES))
        self.ports = {p: ports[3 * i:3 * i + 3] for i, p in enumerate(PARTIES)}
        text = Path(demo_path).read_text()
        for i, p in enumerate(PARTIES):
            text = text.replace(f"127.0.0.1:{7471 + i}", f"127.0.0.1:{self.ports[p][0]}")
        # Same directory as the demo (sources are relative to the file).
        self.path = Path(demo_path).parent / f"net-{ports[0]}.toml"
        self.path.write_text(text)
        self.tampered = None
        if tamper:
            self.tampered = Path(demo_path).parent / f"net-{ports[0]}-{tamper}.toml"
            tampered = tomllib.loads(text)
            cost = tampered["parties"]["insurer"]["tables"]["claims"]["columns"]["cost_eur"]
            assert cost["range"] == [0, 250000]
            cost["range"] = [0, 500000]                     # the bureau believes claims cost up to twice as much
            self.tampered.write_text(tomli_w.dumps(tampered))
        self.procs: dict[str, subprocess.Popen] = {}

    def state(self, party):
        return self.workdir / "state" / party

    def audit(self, party):
        path = self.state(party) / "audit.jsonl"
        return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []

    def start(self, *parties, extra=(), per_party=None, wait=True, env=None):
        started = {}
        for p in parties or PARTIES:
            fed = self.tampered if (self.tampered and p == "bureau") else self.path
            args = [sys.executable, "-m", "sqlmpc.cli.main", "serve", "--federation", str(fed), "--party", p,
                    "--analyst-port", str(self.ports[p][1]), "--mpc-port", str(self.ports[p][2]),
                    "--state", str(self.state(p)), "--timeout", str(TIMEOUT),
                    *(extra or ["--insecure-loopback"]),
                    *((per_party or {}).get(p, ()))]
            self.workdir.mkdir(parents=True, exist_ok=True)
            log = open(self.workdir / f"{p}.log", "a")
            started[p] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True,
                                          env={**os.environ, **(env or {})})
        if wait:
            for p, proc in started.items():
                self.wait_ready(p, proc)
        self.procs.update(started)
        return started

    def wait_ready(self, p, proc, timeout=30):
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if "ready" not in line:
            proc.kill()
            raise AssertionError(f"{p} did not start: {line} {(self.workdir / f'{p}.log').read_text()}")

    def kill(self, party, sig=signal.SIGKILL):
        proc = self.procs.pop(party)
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def stop(self):
        for p in list(self.procs):
            self.kill(p, signal.SIGTERM)

    def url(self, party="hospital", scheme="sqlmpc+insecure"):
        return f"{scheme}://127.0.0.1:{self.ports[party][1]}"


@pytest.fixture(scope="module")
def loopback(demo_path, tmp_path_factory):
    fed = Federation(demo_path, tmp_path_factory.mktemp("net"))
    t0 = time.perf_counter()
    fed.start()
    fed.start_seconds = time.perf_counter() - t0
    yield fed
    fed.stop()


# -- end to end -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["claim_categories", "app_effectiveness", "small_cells_suppressed"])
def test_saved_queries_equal_the_oracle(loopback, name, federation, union_db):
    sql = (QUERIES / f"{name}.sql").read_text()
    with sqlmpc.connect(loopback.url()) as con:
        cur = con.execute(sql)
        result = cur.connection._backend.last_stats
        assert result["leakage"] == cur.leakage and cur.leakage
        secure = Result(cur.fetch_arrow_table(), cur.suppressed, cur.leakage)
    assert_equals_oracle(secure, sql, federation, union_db)
    # Every party logged the accepted query with the same plan hash and its ledger; no data values.
    lines = [loopback.audit(p)[-1] for p in PARTIES]
    assert {l["plan_hash"] for l in lines} == {lines[0]["plan_hash"]}
    assert all(l["decision"] == "accepted" and l["outcome"] == "ok" and l["ledger"] for l in lines)
    assert lines[0]["role"] == "coordinator" and lines[1]["role"] == "participant"
    assert {"time", "analyst", "sql", "reason", "duration_s"} <= set(lines[0])


def test_any_node_can_coordinate_and_status(loopback):
    with sqlmpc.connect(loopback.url("bureau")) as con:
        rows = con.execute("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region").fetchall()
    assert rows and all(n >= 10 for _, n in rows)
    out = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "status", "--connect", loopback.url("insurer")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("reachable") == 3 and "catalogs identical" in out.stdout


def test_policy_errors_come_back_with_caret(loopback):
    with sqlmpc.connect(loopback.url()) as con:
        with pytest.raises(errors.ProgrammingError) as info:
            con.execute("SELECT p.pid FROM hospital.patients p")
    assert "pid" in str(info.value)
    assert loopback.audit("hospital")[-1]["decision"] == "refused"


# -- refusals ----------------------------------------------------------------------------

def last_record_soon(fed, party, timeout=5.0) -> dict:
    """The party's last audit record, waiting for the first one (peers are told some things asynchronously)."""
    deadline = time.monotonic() + timeout
    while not fed.audit(party):
        assert time.monotonic() < deadline, f"no audit record at {party}"
        time.sleep(0.1)
    return fed.audit(party)[-1]


def test_local_policy_refusal_names_the_party(demo_path, tmp_path, federation):
    policy = tmp_path / "bureau-policy.toml"
    policy.write_text("[policy]\nmin_cell_size = 20\n")
    fed = Federation(demo_path, tmp_path)
    fed.start(per_party={"bureau": ["--policy", str(policy)]})
    try:
        with sqlmpc.connect(fed.url()) as con:
            with pytest.raises(errors.QueryRefusedError) as info:
                con.execute((QUERIES / "claim_categories.sql").read_text())
        assert info.value.party == "bureau"
        assert "min_cell_size = 20" in str(info.value) and "bureau" in str(info.value)
        refused = fed.audit("bureau")[-1]
        assert refused["decision"] == "refused" and "min_cell_size" in refused["reason"]
        coord = fed.audit("hospital")[-1]
        assert coord["decision"] == "refused" and coord["outcome"] == "refused"
        # The insurer had accepted and was told to abort (asynchronously): its slot is free again.
        assert last_record_soon(fed, "insurer")["outcome"] == "aborted"
    finally:
        fed.stop()


def test_tampered_catalog_gives_plan_hash_mismatch(demo_path, tmp_path):
    fed = Federation(demo_path, tmp_path, tamper="claims-range")
    fed.start()
    try:
        with sqlmpc.connect(fed.url()) as con:
            with pytest.raises(errors.QueryRefusedError) as info:
                con.execute((QUERIES / "claim_categories.sql").read_text())
        assert info.value.party == "bureau"
        assert "plan hash mismatch" in str(info.value) and "fingerprint" in str(info.value)
    finally:
        fed.stop()


def test_analyst_not_in_policy_is_refused_and_audited(demo_path, tmp_path):
    """A coordinator whose local policy names other analysts refuses before asking any peer."""
    policy = tmp_path / "hospital-policy.toml"
    policy.write_text('[policy]\nanalysts = ["alice"]\n')
    fed = Federation(demo_path, tmp_path)
    fed.start("hospital", per_party={"hospital": ["--policy", str(policy)]})
    try:
        with sqlmpc.connect(fed.url()) as con:
            with pytest.raises(errors.QueryRefusedError, match="analyst 'anonymous' may not query this party"):
                con.execute("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region")
        line = fed.audit("hospital")[-1]
        assert line["analyst"] == "anonymous" and line["decision"] == "refused" and line["outcome"] == "refused"
        assert "may not query this party" in line["reason"] and "127.0.0.1" in line["peer"]
    finally:
        fed.stop()


# -- failures ------------------------------------------------------------------------------

REGIONS = "SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region"


def test_failed_query_is_audited_with_what_was_opened_before_the_failure(loopback, demo_path, tmp_path,
                                                                         monkeypatch):
    with sqlmpc.connect(loopback.url()) as con:
        full = con.execute(REGIONS).leakage
    assert len(full) >= 2
    monkeypatch.setenv(FAIL_AFTER_OPENINGS, str(len(full) - 1))     # inherited by the node processes
    fed = Federation(demo_path, tmp_path)
    fed.start()
    try:
        with sqlmpc.connect(fed.url()) as con:
            # Every party trips at the same opening; the first to report is the cause, named as data.
            with pytest.raises(errors.PartyError, match=r"party '(hospital|insurer|bureau)'") as info:
                con.execute(REGIONS)
        assert info.value.party in PARTIES and info.value.stage not in (None, "admit", "local"), info.value
        lines = [fed.audit(p)[-1] for p in PARTIES]
        assert lines[0]["role"] == "coordinator" and lines[0]["sql"] == REGIONS
        assert len({line["qid"] for line in lines}) == 1
        assert all(line["decision"] == "accepted" and line["outcome"] == "failed" for line in lines), lines
        # Each node logs what it opened itself before the failure, in order; at least one stopped at the hook.
        assert all(line["ledger"] == full[:len(line["ledger"])] for line in lines), lines
        tripped = [line for line in lines if f"before opening {full[-1]['what']!r}" in line["error"]]
        assert tripped and all(line["ledger"] == full[:-1] for line in tripped), lines
    finally:
        fed.stop()

def query_in_background(loopback, sql):
    """Start ``sql`` on a thread; the box gets "ok" or "error", and "seconds"."""
    box = {}

    def run():
        t0 = time.perf_counter()
        try:
            with sqlmpc.connect(loopback.url()) as con:
                con.execute(sql)
            box["ok"] = True
        except Exception as exc:
            box["error"] = exc
        box["seconds"] = time.perf_counter() - t0
        box["ended"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    return t, box


def stall(loopback, party, tmp_path) -> Path:
    """Restart ``party`` so that it stalls inside the MPC of its next query (before its second
    opening) until the returned file is removed; the file appears when it stalls."""
    flag = tmp_path / f"{party}-stalled"
    loopback.kill(party, signal.SIGTERM)
    loopback.start(party, env={PAUSE_AFTER_OPENINGS: "1", PAUSE_FILE: str(flag)})
    return flag


def wait_for(flag: Path, box: dict) -> float:
    """Until the stalled party's file appears (the query is under way there; a bound, not a guess)."""
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert "seconds" not in box, f"the query ended before the party stalled: {box}"
        assert time.monotonic() < deadline, f"the party never reached its stall point ({flag})"
        time.sleep(0.05)
    return time.monotonic()


def test_killed_party_fails_the_query_then_recovers(loopback, federation, union_db, tmp_path):
    sql = (QUERIES / "app_effectiveness.sql").read_text()
    flag = stall(loopback, "insurer", tmp_path)
    t, box = query_in_background(loopback, sql)
    wait_for(flag, box)         # the insurer is inside the MPC
    loopback.kill("insurer")
    killed = time.monotonic()
    t.join(TIMEOUT + 20)
    assert not t.is_alive()
    exc = box["error"]
    assert isinstance(exc, errors.OperationalError), exc
    assert "insurer" in str(exc)
    assert box["ended"] - killed < TIMEOUT + 5
    coord = loopback.audit("hospital")[-1]
    assert coord["outcome"] == "failed" and "insurer" in coord["error"]
    # Restart the party on the same ports: the next query succeeds, nothing was left behind.
    loopback.start("insurer")
    with sqlmpc.connect(loopback.url()) as con:
        cur = con.execute(sql)
        secure = Result(cur.fetch_arrow_table(), cur.suppressed, cur.leakage)
    assert_equals_oracle(secure, sql, federation, union_db)
    assert_idle_soon(loopback)


def test_stopped_node_audits_the_query_it_leaves(loopback, tmp_path):
    """SIGTERM in the middle of a query: the node writes that query's record before it exits."""
    sql = (QUERIES / "app_effectiveness.sql").read_text()
    flag = stall(loopback, "insurer", tmp_path)
    t, box = query_in_background(loopback, sql)
    wait_for(flag, box)         # the insurer is inside the MPC, one opening done
    loopback.kill("insurer", signal.SIGTERM)
    t.join(TIMEOUT + 20)
    assert not t.is_alive()
    assert "error" in box, box
    stopped, coord = loopback.audit("insurer")[-1], loopback.audit("hospital")[-1]
    assert stopped["qid"] == coord["qid"] and coord["sql"] == sql and coord["outcome"] == "failed"
    assert stopped["outcome"] == "failed" and stopped["error"] == "the node was stopped during the query", stopped
    assert len(stopped["ledger"]) == 1                   # it stopped where it stalled
    longest = max(stopped["ledger"], coord["ledger"], key=len)
    assert all(line["ledger"] == longest[:len(line["ledger"])] for line in (stopped, coord))
    loopback.start("insurer")
    assert_idle_soon(loopback)


def assert_idle_soon(loopback) -> None:
    """Every party is reachable, not busy and holds no MPC session (within the timeout)."""
    deadline = time.monotonic() + TIMEOUT + 10
    while True:
        parties = RemoteConnection(loopback.url()).status()["parties"]
        if all(p.get("reachable") and not p["busy"] and p["sessions_open"] == 0 for p in parties.values()):
            return
        assert time.monotonic() < deadline, parties
        time.sleep(0.5)


def test_stalled_party_fails_within_the_timeout(loopback, tmp_path):
    sql = (QUERIES / "app_effectiveness.sql").read_text()
    flag = stall(loopback, "bureau", tmp_path)
    t, box = query_in_background(loopback, sql)
    stalled = wait_for(flag, box)   # the bureau holds up the MPC from here on
    t.join(TIMEOUT + 20)
    assert not t.is_alive()
    assert isinstance(box.get("error"), errors.OperationalError), box
    assert "bureau" in str(box["error"])
    # named by a party that waited on the bureau alone, not guessed by one that waited on several
    assert not isinstance(box["error"], (errors.PeerSilentError, errors.PeerLostError)), box
    assert box["ended"] - stalled < TIMEOUT + 6
    flag.unlink()                                        # the bureau resumes
    assert_idle_soon(loopback)                           # and winds its failed query down
    loopback.kill("bureau", signal.SIGTERM)              # a bureau that does not stall again
    loopback.start("bureau")
    with sqlmpc.connect(loopback.url()) as con:          # the federation serves the next query
        assert con.execute((QUERIES / "claim_categories.sql").read_text()).fetchall()


# -- security ----------------------------------------------------------------------------------

def test_no_certificates_no_start(loopback):
    out = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "serve", "--federation", str(loopback.path),
                          "--party", "hospital"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "--insecure-loopback" in out.stderr


@pytest.fixture(scope="module")
def tls(demo_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("tls")
    fed = Federation(demo_path, work)
    tokens = init_keys(load_federation(fed.path), work / "keys")
    other = init_keys(load_federation(fed.path), work / "other-keys")
    fed.keys, fed.token, fed.other_token = work / "keys", tokens["analyst"], other["analyst"]
    # Two workers per node: the join tokens also run in worker sessions over mutual TLS.
    fed.start(extra=["--keys", str(work / "keys"), "--workers", "2"])
    yield fed
    fed.stop()


def tls_query(tls, name: str, federation, union_db) -> None:
    """Run a saved query through the TLS federation with the analyst's token; it must equal the oracle."""
    sql = (QUERIES / f"{name}.sql").read_text()
    with sqlmpc.connect(tls.url(scheme="sqlmpc"), token=tls.token, ca=str(tls.keys / "ca.pem")) as con:
        cur = con.execute(sql)
        secure = Result(cur.fetch_arrow_table(), cur.suppressed, cur.leakage)
    assert_equals_oracle(secure, sql, federation, union_db)


def test_tls_query_with_token(tls, federation, union_db):
    tls_query(tls, "claim_categories", federation, union_db)
    assert tls.audit("hospital")[-1]["analyst"] == "analyst"


def test_tls_query_runs_in_the_workers_sessions(tls, federation, union_db):
    """`--workers 2` at every node: a join query runs in two MPC sessions per party, over TLS."""
    tls_query(tls, "app_effectiveness", federation, union_db)
    for party in ("hospital", "insurer", "bureau"):
        record = last_record_soon(tls, party)
        assert record["outcome"] == "ok" and record["sessions"] == 2, record


def test_wrong_token_is_rejected_and_audited_without_the_token(tls):
    before = len(tls.audit("hospital"))
    for token in (tls.other_token, None):
        with pytest.raises(errors.OperationalError, match="authentication failed"):
            sqlmpc.connect(tls.url(scheme="sqlmpc"), token=token, ca=str(tls.keys / "ca.pem"))
    failed = tls.audit("hospital")[before:]
    assert [r.get("event") for r in failed] == ["authentication failed"] * 2, failed
    assert [r["reason"] for r in failed] == ["invalid analyst token", "missing bearer token"]
    assert all(r["endpoint"] == "analyst" and r["action"] == "catalog" and "127.0.0.1" in r["peer"]
               and r["time"] and r["claimed"] is None for r in failed), failed
    text = (tls.state("hospital") / "audit.jsonl").read_text()
    for secret in (tls.other_token, tls.token):
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() not in text


def test_wrong_token_on_other_calls_is_audited(tls):
    """Calls other than actions are refused by the middleware itself, and audited there."""
    client = flight.FlightClient(f"grpc+tls://127.0.0.1:{tls.ports['hospital'][1]}",
                                 tls_root_certs=(tls.keys / "ca.pem").read_bytes())
    options = flight.FlightCallOptions(timeout=5, headers=[(b"authorization", f"Bearer {tls.other_token}".encode())])
    before = len(tls.audit("hospital"))
    with pytest.raises(flight.FlightUnauthenticatedError, match="invalid analyst token"):
        list(client.list_actions(options=options))
    failed = tls.audit("hospital")[before:]
    assert len(failed) == 1 and failed[0]["event"] == "authentication failed", failed
    assert failed[0]["reason"] == "invalid analyst token" and "LIST_ACTIONS" in failed[0]["action"]


def test_nothing_listens_in_plaintext(tls):
    for port in tls.ports["hospital"][:2]:
        client = flight.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
        with pytest.raises(flight.FlightError):
            list(client.do_action(flight.Action("hello", b"{}"), options=flight.FlightCallOptions(timeout=5)))


def test_peer_with_a_certificate_from_another_ca_is_rejected(tls):
    def hello(keys: Path):
        client = flight.FlightClient(
            f"grpc+tls://127.0.0.1:{tls.ports['insurer'][0]}", tls_root_certs=(tls.keys / "ca.pem").read_bytes(),
            cert_chain=(keys / "hospital" / "cert.pem").read_bytes(),
            private_key=(keys / "hospital" / "key.pem").read_bytes(), override_hostname="insurer")
        return list(client.do_action(flight.Action("hello", b"{}"), options=flight.FlightCallOptions(timeout=5)))

    assert json.loads(hello(tls.keys)[0].body.to_pybytes())["party"] == "insurer"   # the right CA works
    with pytest.raises(flight.FlightError):
        hello(tls.keys.parent / "other-keys")


def test_crafted_pickle_is_not_executed(loopback, tmp_path):
    """A peer's message with a code-running pickle is refused by the unpickler every session installs."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Evil())
    with pytest.raises(pickle.UnpicklingError, match="forbidden global"):
        unpickle.loads(payload)
    assert not marker.exists()
    # Every node runs MPyC with the restricted unpickler installed (after its first session).
    status = RemoteConnection(loopback.url()).status()
    assert all(p["restricted_unpickler"] for p in status["parties"].values())
