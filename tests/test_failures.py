"""A party that fails stops the query on every party at once, and the error says who and where."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import pytest

from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.party.embedded import EmbeddedFederation
from sqlmpc.party.faults import FAIL_AFTER_OPENINGS, FAIL_PARTY, FAIL_WITH

pytestmark = pytest.mark.mpc

QUERY = (Path(__file__).parent.parent / "queries" / "app_effectiveness.sql").read_text()


def last_record(fed: EmbeddedFederation, party: str) -> dict:
    lines = Path(fed.party_audit[party]).read_text().splitlines()
    return json.loads(lines[-1])


def test_a_failing_party_stops_the_query_within_two_seconds_and_is_named(demo_path, monkeypatch, tmp_path):
    monkeypatch.setenv(FAIL_AFTER_OPENINGS, "1")          # fails before its second opening, inside the MPC
    monkeypatch.setenv(FAIL_PARTY, "insurer")             # the others would wait for it
    with EmbeddedFederation(load_federation(demo_path), state=tmp_path) as fed:
        with pytest.raises(errors.OperationalError) as err:
            fed.query(QUERY)
        arrived = datetime.datetime.now(datetime.timezone.utc)
        assert err.value.party == "insurer" and err.value.stage == "join"
        assert "injected failure" in str(err.value)
        failed = last_record(fed, "insurer")
        assert failed["outcome"] == "failed"
        # The failure is written when the insurer gives up; the error reaches the analyst soon after,
        # not after the other parties' timeout.
        assert (arrived - datetime.datetime.fromisoformat(failed["time"])).total_seconds() < 2.0
        assert fed.timeout >= 30
        monkeypatch.delenv(FAIL_AFTER_OPENINGS)
        # The stopped parties are restarted: the next query runs.
        assert fed.query("SELECT COUNT(*) AS n FROM bureau.persons b").rows()[0][0] > 0


def test_a_party_out_of_memory_fails_the_query_naming_it_and_the_stage_and_the_next_runs(
        demo_path, monkeypatch, tmp_path):
    monkeypatch.setenv(FAIL_AFTER_OPENINGS, "1")
    monkeypatch.setenv(FAIL_PARTY, "bureau")
    monkeypatch.setenv(FAIL_WITH, "MemoryError")
    with EmbeddedFederation(load_federation(demo_path), state=tmp_path) as fed:
        with pytest.raises(errors.OutOfMemoryError, match="party 'bureau': ran out of memory in stage 'join'; "
                                                          "set a smaller batch_rows") as err:
            fed.query(QUERY)
        assert err.value.party == "bureau" and err.value.stage == "join"
        monkeypatch.delenv(FAIL_AFTER_OPENINGS)
        assert fed.query("SELECT COUNT(*) AS n FROM bureau.persons b").rows()[0][0] > 0


def test_the_coordinator_reports_the_cause_not_the_parties_it_stopped(demo_path, monkeypatch, tmp_path):
    monkeypatch.setenv(FAIL_AFTER_OPENINGS, "0")          # before the first opening (after the local stage)
    monkeypatch.setenv(FAIL_PARTY, "bureau")
    with EmbeddedFederation(load_federation(demo_path), state=tmp_path) as fed:
        started = time.monotonic()
        with pytest.raises(errors.OperationalError) as err:
            fed.query(QUERY)
        assert time.monotonic() - started < fed.timeout
        assert err.value.party == "bureau" and err.value.stage == "input"
