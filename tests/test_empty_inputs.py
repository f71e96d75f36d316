"""Empty domains and empty inputs through the real embedded federation, against the oracle.

A WHERE that leaves a GROUP BY dimension no value of its public domain (a region that does
not exist, as a literal or a parameter) is refused before any party starts, with the same
EmptyGridError from the driver and the oracle; a WHERE that matches no row but keeps the
grid gives the oracle's answer.  WIDTH_BUCKET (translated for DuckDB) equals the oracle.
"""

from __future__ import annotations

import pytest

import sqlmpc
from compare import assert_same_result
from sqlmpc.errors import EmptyGridError, ProgrammingError

pytestmark = pytest.mark.mpc

EMPTY_DOMAIN = [
    ("SELECT b.region, COUNT(*) AS n FROM bureau.persons b WHERE b.region = 'Atlantis' GROUP BY b.region",
     None, "b.region = 'Atlantis'"),
    ("SELECT b.region, COUNT(*) AS n FROM bureau.persons b WHERE b.region = ? GROUP BY b.region",
     ["Atlantis"], "b.region = ?"),
    ("SELECT p.diagnosis, b.age_band, COUNT(DISTINCT p.pid) AS n FROM hospital.patients p "
     "JOIN bureau.persons b ON b.pid = p.pid WHERE p.diagnosis IN ('flu', 'cold') GROUP BY 1, 2",
     None, "p.diagnosis IN"),
]

SAME_AS_ORACLE = [
    # the grid is kept, the input is empty: a suppressed zero count, as in the oracle
    "SELECT COUNT(*) AS n FROM bureau.persons b WHERE b.region = 'Atlantis'",
    "SELECT b.region, COUNT(*) AS n FROM bureau.persons b WHERE b.income_decile > 10 GROUP BY b.region",
    "SELECT WIDTH_BUCKET(c.cost_eur, 0, 2000, 4) AS bucket, COUNT(*) AS n, SUM(c.cost_eur) AS s "
    "FROM insurer.claims c WHERE c.year = 2024 GROUP BY 1 ORDER BY 1",
]


@pytest.fixture(scope="module")
def secure(demo_path):
    with sqlmpc.connect(demo_path) as con:
        yield con


@pytest.fixture(scope="module")
def oracle(demo_path):
    with sqlmpc.connect(demo_path, oracle=True) as con:
        yield con


@pytest.mark.parametrize("sql, params, at", EMPTY_DOMAIN)
def test_where_outside_the_domain_is_refused_alike_before_any_party_works(sql, params, at, secure, oracle):
    for con in (oracle, secure):
        with pytest.raises(EmptyGridError, match="no value of its public domain") as err:
            con.run(sql, params)
        assert isinstance(err.value, ProgrammingError) and err.value.hint
    # the caret points at the condition that empties the domain (in the text as written)
    if params is None:
        assert sql[err.value.column - 1:].startswith(at)
    secure.run("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region")   # parties fine


@pytest.mark.parametrize("sql", SAME_AS_ORACLE)
def test_empty_input_and_binning_equal_the_oracle(sql, secure, oracle):
    assert_same_result(secure.run(sql), oracle.run(sql), sql)
