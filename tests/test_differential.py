"""The differential tester (tests/differential.py) in CI: generated queries, fixed seed.

Each query is refused before any party works with a ProgrammingError subclass, or the oracle
equals the independent expectation (plain DuckDB plus the documented release rules); a sample
also runs through the embedded 3-party federation and equals both.  The generator reaches
every rule and terminal of grammar/sqlmpc.lark and every function of the registry.
``python bench/differential.py --n 3000`` is the bench mode.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

import differential
from sqlmpc import errors

pytestmark = [pytest.mark.mpc, pytest.mark.slow]

CI_CASES = 300
CI_SECURE = 30
SEED = 7


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    failures: list[str] = []
    runner = differential.Runner(tmp_path_factory.mktemp("differential"), SEED, report=failures.append)
    cases = runner.run(CI_CASES, CI_SECURE)
    print(differential.summary(cases))          # shown with pytest -s
    return cases, failures


def test_every_generated_query_agrees_or_is_refused_before_any_party_works(run):
    cases, failures = run
    assert len(cases) == CI_CASES
    assert not failures, "\n\n".join(failures)


def test_the_cases_reach_the_oracle_the_secure_engine_and_the_refusals(run):
    cases, _ = run
    counts = differential.summary(cases)
    assert counts["agreed"] >= CI_CASES // 3
    assert counts["agreed (also secure)"] >= CI_SECURE * 2 // 3
    for name in counts["refused"]:            # every refusal is a ProgrammingError subclass
        assert issubclass(getattr(errors, name), errors.ProgrammingError), name
    assert {"EmptyGridError", "AggregateArgumentPolicyError", "UnsupportedExpressionError"} <= set(counts["refused"])
    # the release rules are exercised: released and suppressed cells, several worlds' k
    assert len({c.world for c in cases}) >= 5


def test_the_generator_reaches_every_construct_of_the_grammar_and_the_registry():
    gen = differential.Generator(random.Random(SEED))
    sqls = [gen.query().render()[0] for _ in range(1500)]
    assert differential.missing_constructs(sqls) == set()
    assert "rule function_star" in differential.grammar_constructs()       # the check sees the grammar


def test_a_wrong_oracle_answer_is_a_failure_and_is_shrunk(tmp_path, monkeypatch):
    """The tester itself: an oracle that forgets suppression is caught, and the reproduction shrinks."""
    from sqlmpc.oracle import run_oracle

    def unsuppressed(sql, federation, con=None):
        result = run_oracle(sql, federation, con)
        return replace(result, suppressed=[False] * len(result.suppressed))

    monkeypatch.setattr(differential, "run_oracle", unsuppressed)
    failures: list[str] = []
    cases = differential.Runner(tmp_path, 3, per_world=25, report=failures.append).run(25)
    assert any(c.verdict.failed and "suppressed" in c.verdict.detail for c in cases)
    assert failures and all("shrunk:" in f for f in failures)
    shrunk = failures[0].split("shrunk: ")[1]
    assert len(shrunk) <= len(failures[0].split("query:  ")[1].split("\n")[0])
