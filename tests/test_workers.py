"""Workers: a party's share of the per-row secure stages in several processes (``workers = N``).

The results must equal one session's exactly — the same cells, the same suppression, the same
openings — since only the place where each row's work runs changes.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compare import assert_same_result
from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.oracle import run_oracle

QUERIES = Path(__file__).parent.parent / "queries"
ADDRESS = re.compile(r'^(address = "127\.0\.0\.1:(\d+)")$', re.M)


def with_workers(demo_path: Path, directory: Path, counts: dict[int, int]) -> Path:
    """A copy of the demo federation whose parties (by address port) declare ``workers``."""
    shutil.copytree(demo_path.parent, directory)
    path = directory / demo_path.name
    text = ADDRESS.sub(lambda m: f"{m[1]}\nworkers = {counts[int(m[2])]}" if int(m[2]) in counts else m[1],
                       path.read_text())
    assert text.count("workers = ") == len(counts)
    path.write_text(text)
    return path


def worker_cpu(stats: dict) -> dict[tuple[str, str], float]:
    """Per party and sliced stage, the CPU seconds its worker processes spent (0: none ran)."""
    return {(party, stage): s["stages"].get(stage, {}).get("worker_cpu_s", 0.0)
            for party, s in stats.items() for stage in ("shuffle", "join")}


def primitives(stats: dict) -> dict[tuple[str, str], int]:
    """Per party and primitive (kind/field bits), the elements its processes ran, over all stages."""
    out: dict = {}
    for party, s in stats.items():
        for stage in s["stages"].values():
            for key, n in stage.get("primitives", {}).items():
                out[(party, key)] = out.get((party, key), 0) + n
    return out


@pytest.mark.mpc
@pytest.mark.parametrize("name", ["app_effectiveness", "cost_by_diagnosis_region"])
def test_two_workers_give_exactly_the_result_and_openings_of_one(name, demo_path, federation, union_db, tmp_path):
    from sqlmpc.party.embedded import EmbeddedFederation

    two = load_federation(with_workers(demo_path, tmp_path / "two", {7471: 2, 7472: 2, 7473: 2}))
    assert [p.workers for p in two.parties] == [2, 2, 2]
    assert two.fingerprint == federation.fingerprint      # an operational setting, not the catalog
    sql = (QUERIES / f"{name}.sql").read_text()
    results, cpu, work = {}, {}, {}
    for label, fed in (("one", federation), ("two", two)):
        with EmbeddedFederation(fed) as embedded:
            results[label] = embedded.query(sql)
            cpu[label] = worker_cpu(embedded.last_stats)
            work[label] = primitives(embedded.last_stats)
            audit = embedded.state / "hospital" / "audit.jsonl"
            assert f'"sessions": {1 if label == "one" else 2}' in audit.read_text().splitlines()[-1]
    assert_same_result(results["two"], run_oracle(sql, federation, union_db), name)
    one, two_ = results["one"], results["two"]
    assert two_.table.equals(one.table) and two_.suppressed == one.suppressed
    assert two_.leakage == one.leakage                   # the same openings, counted once each
    assert all(v == 0 for v in cpu["one"].values()), cpu
    assert all(v > 0 for v in cpu["two"].values()), cpu  # every party's worker shuffled and tokenised a slice
    assert work["two"] == work["one"]                    # the same inputs, products and openings, elsewhere


@pytest.mark.mpc
def test_the_party_with_fewest_workers_sets_the_sessions(demo_path, federation, tmp_path):
    """Worker w of every party talks to the others' worker w: a party with one worker means none."""
    from sqlmpc.party.embedded import EmbeddedFederation

    mixed = load_federation(with_workers(demo_path, tmp_path / "mixed", {7471: 2, 7472: 3}))
    with EmbeddedFederation(mixed) as embedded:
        embedded.query((QUERIES / "app_effectiveness.sql").read_text())
        assert all(v == 0 for v in worker_cpu(embedded.last_stats).values())


@pytest.mark.mpc
def test_a_failing_worker_fails_the_query_in_its_stage_and_the_next_query_runs(
        demo_path, federation, union_db, tmp_path, monkeypatch):
    from sqlmpc.party.embedded import EmbeddedFederation

    flag = tmp_path / "fail-a-worker"
    monkeypatch.setenv("SQLMPC_FAIL_WORKER", str(flag))      # inherited by the party processes
    two = load_federation(with_workers(demo_path, tmp_path / "two", {7471: 2, 7472: 2, 7473: 2}))
    sql = (QUERIES / "app_effectiveness.sql").read_text()
    with EmbeddedFederation(two, timeout=10) as embedded:
        flag.touch()
        with pytest.raises(errors.OperationalError) as failure:
            embedded.query(sql)
        assert failure.value.stage == "join", failure.value
        assert failure.value.party in {"hospital", "insurer", "bureau"}
        # The party whose worker failed is the cause, not a peer that lost its session with it.
        assert "worker 1 failed: InjectedFailure: injected failure" in str(failure.value), failure.value
        assert not isinstance(failure.value, errors.PeerLostError)
        assert not flag.exists()
        assert_same_result(embedded.query(sql), run_oracle(sql, federation, union_db), "after the failure")
    assert no_worker_processes_soon(), "worker processes or fork servers outlived their parties"


def command_lines() -> list[bytes]:
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):          # a process that ended meanwhile
            lines.append(path.read_bytes())
    return lines


def no_worker_processes_soon(timeout: float = 10.0) -> bool:
    """Whether, within ``timeout`` seconds, no fork server of sqlmpc's workers (or worker forked
    from one: it shares the command line) is left on the machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(b"forkserver" in line and b"sqlmpc.mpc.workers" in line for line in command_lines()):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.mpc
def test_a_worker_out_of_memory_is_the_party_out_of_memory(demo_path, tmp_path, monkeypatch):
    from sqlmpc.party.embedded import EmbeddedFederation

    flag = tmp_path / "fail-a-worker"
    monkeypatch.setenv("SQLMPC_FAIL_WORKER", str(flag))
    monkeypatch.setenv("SQLMPC_FAIL_WITH", "MemoryError")
    two = load_federation(with_workers(demo_path, tmp_path / "two", {7471: 2, 7472: 2, 7473: 2}))
    with EmbeddedFederation(two, timeout=10) as embedded:
        flag.touch()
        with pytest.raises(errors.OutOfMemoryError, match=r"ran out of memory in stage 'join'") as failure:
            embedded.query((QUERIES / "app_effectiveness.sql").read_text())
        assert failure.value.party in {"hospital", "insurer", "bureau"}


@pytest.mark.parametrize("value, fragment", [("0", "must be a positive integer, not 0"),
                                             ("-1", "must be a positive integer, not -1"),
                                             ('"two"', "must be a positive integer"),
                                             ("true", "must be a positive integer"),
                                             ("1.5", "must be a positive integer")])
def test_a_bad_workers_count_is_a_config_error_with_its_line(value, fragment, demo_path, tmp_path):
    path = with_workers(demo_path, tmp_path / "bad", {7472: 1})
    path.write_text(path.read_text().replace("workers = 1", f"workers = {value}"))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("workers"))
    with pytest.raises(errors.ConfigError) as bad:
        load_federation(path)
    assert fragment in str(bad.value) and "workers" in str(bad.value)
    assert bad.value.line == line


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_serve_refuses_a_bad_worker_count_before_starting(value, demo_path):
    out = subprocess.run([sys.executable, "-m", "sqlmpc.cli.main", "serve", "--federation", str(demo_path),
                          "--party", "hospital", "--insecure-loopback", "--workers", value],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"--workers: expected a positive integer, not '{value}'" in out.stderr
    assert "ready" not in out.stdout


def test_a_party_refuses_more_sessions_than_its_workers(federation):
    """A coordinator cannot make a party start more worker processes than its operator allows."""
    from sqlmpc.party.node import PartyNode

    node = PartyNode(federation, "insurer")
    sessions = [[("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]]
    with pytest.raises(errors.PartyError, match=r"asks for 2 MPC sessions per party; this party runs at most 1"):
        node.execute_plan(None, sessions[0], workers=sessions, max_workers=1)
