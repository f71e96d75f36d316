"""Batched secure stages (``batch_rows``): results independent of the batch, bad values refused early."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from compare import assert_same_result
from sqlmpc import errors
from sqlmpc.catalog import DEFAULT_BATCH_ROWS, load_federation
from sqlmpc.mpc.join import person_rows
from sqlmpc.oracle import run_oracle
from sqlmpc.plan.compile import compile

QUERIES = Path(__file__).parent.parent / "queries"
SMALL = 64      # far below the demo's row counts: every secure stage runs many batches


def with_batch_rows(demo_path: Path, target: Path, value: str) -> Path:
    """A copy of the demo federation whose [federation] table sets batch_rows = value."""
    shutil.copytree(demo_path.parent, target)
    path = target / demo_path.name
    text = path.read_text()
    path.write_text(text.replace("[federation]\n", f"[federation]\nbatch_rows = {value}\n", 1))
    return path


@pytest.fixture(scope="module")
def small_batches(demo_path, tmp_path_factory):
    return load_federation(with_batch_rows(demo_path, tmp_path_factory.mktemp("batches") / "fed", str(SMALL)))


@pytest.fixture(scope="module")
def default_batches(federation):
    from sqlmpc.party.embedded import EmbeddedFederation

    with EmbeddedFederation(federation) as fed:
        yield fed


@pytest.mark.mpc
@pytest.mark.parametrize("name", ["app_effectiveness", "app_engagement_by_age", "sessions_vs_cost"])
def test_small_batches_give_the_oracle_result_and_open_the_same(name, small_batches, default_batches,
                                                                 federation, union_db):
    from sqlmpc.party.embedded import EmbeddedFederation

    sql = (QUERIES / f"{name}.sql").read_text()
    heard: list[str] = []
    with EmbeddedFederation(small_batches) as fed:
        result = fed.query(sql, progress=heard.append)
    assert_same_result(result, run_oracle(sql, federation, union_db), name)
    # A stage of many batches keeps the progress line moving: "join (128 of 1,936 keys)".
    ticks = [h for h in heard if re.fullmatch(r"(input|shuffle|join|aggregate) \([\d,]+ of [\d,]+ \w.*\)", h)]
    assert any(t.startswith("join (") and t.endswith(" keys)") for t in ticks), heard
    assert heard.index("join") < heard.index(next(t for t in ticks if t.startswith("join (")))
    # Batches do not change what is opened: the same ledger, entry by entry, as one batch.
    whole = default_batches.query(sql)
    assert [(e["what"], e["count"]) for e in result.leakage] == [(e["what"], e["count"]) for e in whole.leakage]
    assert [e["what"] for e in result.leakage].count("join tokens") == 1         # all batches in one entry


def test_batch_rows_is_part_of_the_plan_hash(small_batches, federation):
    """Parties that would batch differently disagree on the plan hash, so the query is refused
    before any share is sent (the protocol's messages follow the batches)."""
    sql = (QUERIES / "app_effectiveness.sql").read_text()
    assert small_batches.batch_rows == SMALL and federation.batch_rows == DEFAULT_BATCH_ROWS
    assert compile(sql, small_batches).digest != compile(sql, federation).digest


@pytest.mark.parametrize("value, fragment", [("0", "must be a positive integer, not 0"),
                                             ("-3", "must be a positive integer, not -3"),
                                             ('"many"', "'batch_rows' must be a positive integer"),
                                             ("true", "'batch_rows' must be a positive integer"),
                                             ("1.5", "'batch_rows' must be a positive integer")])
def test_a_bad_batch_size_is_a_config_error_naming_the_key(value, fragment, demo_path, tmp_path):
    path = with_batch_rows(demo_path, tmp_path / "fed", value)
    with pytest.raises(errors.ConfigError, match=fragment) as info:
        load_federation(path)
    assert "federation.toml:3 [federation.batch_rows]" in str(info.value)     # the file, line and key


def test_person_rows_lists_each_persons_rows_by_depth():
    persons = np.array([7, 3, 7, 9, 3, 7], dtype=np.uint64)
    rows = person_rows(persons)
    n = len(persons)
    groups = sorted(sorted(int(i) for i in rows[:, j] if i < n) for j in range(rows.shape[1]))
    assert groups == [[0, 2, 5], [1, 4], [3]]
    assert rows.shape == (3, 3) and (rows == n).sum() == 3          # padded with n
    for j in range(rows.shape[1]):                                   # a person's rows in row order
        real = [int(i) for i in rows[:, j] if i < n]
        assert real == sorted(real) and list(rows[:len(real), j]) == real
    assert person_rows(np.array([1, 2, 3], dtype=np.uint64)) is None  # everyone once


@pytest.mark.mpc
def test_a_failure_between_batches_names_the_stage_not_the_progress(small_batches, monkeypatch, tmp_path):
    """The progress line says "join (64 of 1,936 keys)"; an error names the stage: "join"."""
    from sqlmpc.party.embedded import EmbeddedFederation
    from sqlmpc.party.faults import FAIL_AFTER_OPENINGS, FAIL_PARTY, FAIL_WITH

    monkeypatch.setenv(FAIL_AFTER_OPENINGS, "2")     # input sizes, the first batch's tokens, then fail
    monkeypatch.setenv(FAIL_PARTY, "bureau")
    monkeypatch.setenv(FAIL_WITH, "MemoryError")
    heard: list[str] = []
    with EmbeddedFederation(small_batches, state=tmp_path) as fed:
        with pytest.raises(errors.OutOfMemoryError, match="ran out of memory in stage 'join'; ") as err:
            fed.query((QUERIES / "app_effectiveness.sql").read_text(), progress=heard.append)
    assert err.value.stage == "join"
    assert any(h.startswith("join (") for h in heard), heard        # it did fail between two batches
