"""The embedded federation's audit log: the same JSON-lines records as networked nodes.

Real party processes and real MPC throughout; a failure mid-query is injected
with the documented test hook ``SQLMPC_FAIL_AFTER_OPENINGS`` (sqlmpc/party/faults.py),
which stops every party just before an opening, after the earlier ones happened.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sqlmpc
from sqlmpc import errors
from sqlmpc.party import faults
from sqlmpc.party.embedded import STATE_ENV, EmbeddedFederation, local_analyst, state_dir
from sqlmpc.mpc.reveal import Ledger

pytestmark = pytest.mark.mpc

PARTIES = ("hospital", "insurer", "bureau")
QUERIES = Path(__file__).parent.parent / "queries"
# One party's data, a few openings (input sizes, the cells passing the rules, the values).
REGIONS = "SELECT b.region, COUNT(*) AS persons FROM bureau.persons b GROUP BY b.region"
REFUSED = "SELECT p.pid FROM hospital.patients p"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def logs(state: Path) -> dict[str, list[dict]]:
    """Every audit log of an embedded federation: the coordinator's and each party's."""
    return {"coordinator": records(state / "audit.jsonl"),
            **{p: records(state / p / "audit.jsonl") for p in PARTIES}}


@pytest.fixture(scope="module")
def embedded(demo_path, tmp_path_factory):
    """sqlmpc.connect() on the demo federation, its audit logs in a fresh state directory ($SQLMPC_STATE)."""
    state = tmp_path_factory.mktemp("audit-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STATE_ENV, str(state))
        con = sqlmpc.connect(demo_path)
    with con:
        yield con, state


@pytest.fixture(scope="module")
def accepted(embedded):
    """One accepted query: its leakage, its rows and the audit records it added."""
    con, state = embedded
    before = {name: len(lines) for name, lines in logs(state).items()}
    cur = con.execute(REGIONS)
    added = {name: lines[before[name]:] for name, lines in logs(state).items()}
    return cur.leakage, cur.fetchall(), added


def scalars(value):
    """Every number and string inside a JSON value."""
    if isinstance(value, dict):
        for v in value.values():
            yield from scalars(v)
    elif isinstance(value, list):
        for v in value:
            yield from scalars(v)
    else:
        yield value


def test_accepted_query_is_logged_by_the_coordinator_and_every_party(accepted):
    leakage, rows, added = accepted
    assert all(len(lines) == 1 for lines in added.values()), added
    coord = added["coordinator"][0]
    assert coord["role"] == "coordinator" and coord["decision"] == "accepted" and coord["outcome"] == "ok"
    assert coord["sql"] == REGIONS and coord["analyst"] == local_analyst()
    assert coord["ledger"] == leakage and len(leakage) >= 2
    assert coord["released_cells"] == len(rows) and coord["suppressed_cells"] == 0 and coord["result_sha256"]
    for party in PARTIES:
        line = added[party][0]
        assert line["role"] == "participant" and line["outcome"] == "ok", line
        assert line["qid"] == coord["qid"] and line["plan_hash"] == coord["plan_hash"] and coord["plan_hash"]
        assert line["ledger"] == coord["ledger"]
        assert line["coordinator"] == coord["coordinator"] and line["analyst"] == coord["analyst"]
    # No data values: the released counts appear in no record (only how many cells, and a hash).
    released = {n for _, n in rows}
    assert all(n >= 10 for n in released)
    for line in [coord, *(added[p][0] for p in PARTIES)]:
        assert not released & set(scalars({k: v for k, v in line.items() if k != "duration_s"})), line


def test_refused_query_is_logged_with_its_reason_and_reaches_no_party(embedded):
    con, state = embedded
    before = {name: len(lines) for name, lines in logs(state).items()}
    with pytest.raises(errors.PolicyError, match="key column 'p.pid' cannot be output"):
        con.execute(REFUSED)
    after = logs(state)
    assert len(after["coordinator"]) == before["coordinator"] + 1
    line = after["coordinator"][-1]
    assert line["sql"] == REFUSED and line["decision"] == "refused" and line["outcome"] == "refused"
    assert "key column 'p.pid' cannot be output" in line["reason"]
    assert line["ledger"] == [] and line["plan_hash"] is None
    assert all(len(after[p]) == before[p] for p in PARTIES)     # refused before any party worked


def test_failed_query_is_logged_with_what_was_opened_before_the_failure(accepted, demo_path, tmp_path,
                                                                        monkeypatch):
    full = accepted[0]
    opened_before = len(full) - 1       # fail just before the last opening
    assert opened_before >= 1
    monkeypatch.setenv(STATE_ENV, str(tmp_path))
    monkeypatch.setenv(faults.FAIL_AFTER_OPENINGS, str(opened_before))   # inherited by the party processes
    with sqlmpc.connect(demo_path) as con:
        with pytest.raises(errors.OperationalError):
            con.execute(REGIONS)
    after = logs(tmp_path)
    coord = after["coordinator"][-1]
    assert coord["sql"] == REGIONS and coord["decision"] == "accepted" and coord["outcome"] == "failed"
    assert coord["ledger"] == full[:opened_before]       # the most any party opened
    parties = [after[party][-1] for party in PARTIES]
    assert all(line["qid"] == coord["qid"] and line["outcome"] == "failed" for line in parties), parties
    # Each party logs what it opened itself: the openings before the failure, in order.  A party
    # whose peers gave up first may have stopped earlier; at least one stopped at the hook.
    assert all(line["ledger"] == full[:len(line["ledger"])] for line in parties), parties
    tripped = [line for line in parties if f"before opening {full[opened_before]['what']!r}" in line["error"]]
    assert tripped and all(line["ledger"] == full[:opened_before] for line in tripped), parties


def test_cancelled_query_is_logged_by_every_party_with_what_it_opened(federation, tmp_path):
    """Ctrl-C in the driver (here: raised from the progress callback) stops the busy parties with
    SIGTERM; each writes its record before it exits."""
    sql = (QUERIES / "app_effectiveness.sql").read_text()        # a join: seconds in the MPC
    stages = []

    def cancel_at_join(stage):
        stages.append(stage)
        if stage == "join":
            raise KeyboardInterrupt

    fed = EmbeddedFederation(federation, state=tmp_path)
    processes = [p.process for p in fed.parties]
    try:
        with pytest.raises(KeyboardInterrupt):
            fed.query(sql, progress=cancel_at_join)
    finally:
        fed.close()
    assert stages[-1] == "join"
    assert [p.returncode for p in processes] == [0] * len(PARTIES)     # each stopped itself, not killed
    after = logs(tmp_path)
    coord = after["coordinator"][-1]
    assert coord["sql"] == sql and coord["outcome"] == "cancelled" and coord["error"] == "KeyboardInterrupt"
    parties = [after[party][-1] for party in PARTIES]
    assert all(line["qid"] == coord["qid"] and line["outcome"] == "cancelled" for line in parties), parties
    assert all("stopped during the query" in line["error"] for line in parties), parties
    # The party that reported the join stage had opened the input sizes; all agree on the order.
    assert parties[0]["ledger"][0]["what"] == "input sizes"
    longest = max((line["ledger"] for line in parties), key=len)
    assert all(line["ledger"] == longest[:len(line["ledger"])] for line in parties), parties


def test_state_directory_default_and_overrides(demo_path, tmp_path, monkeypatch):
    monkeypatch.delenv(STATE_ENV, raising=False)
    assert state_dir(demo_path) == Path(demo_path).resolve().parent / "sqlmpc-state"
    monkeypatch.setenv(STATE_ENV, str(tmp_path / "env"))
    assert state_dir(demo_path) == tmp_path / "env"
    assert state_dir(demo_path, tmp_path / "arg") == tmp_path / "arg"


def test_unwritable_audit_log_stops_the_federation_from_starting(federation, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(errors.ConfigError, match="cannot write the audit log .*a-file/audit.jsonl"):
        EmbeddedFederation(federation, state=blocker)


def test_fault_hook_needs_a_number(monkeypatch):
    monkeypatch.setenv(faults.FAIL_AFTER_OPENINGS, "two")
    with pytest.raises(errors.ConfigError, match="SQLMPC_FAIL_AFTER_OPENINGS='two'"):
        faults.armed(Ledger())
    monkeypatch.setenv(faults.FAIL_AFTER_OPENINGS, "1")
    ledger = Ledger()
    armed = faults.armed(ledger)
    armed.record("first", 1, "test")
    with pytest.raises(faults.InjectedFailure, match="before opening 'second'"):
        armed.record("second", 1, "test")
    assert [e.what for e in ledger.entries] == ["first"]      # the caller's ledger saw the first opening
