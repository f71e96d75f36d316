"""The SQLAlchemy dialect: engines from URLs, reflection of the catalog, pandas.read_sql on the secure path."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import MetaData, Table, create_engine, func, inspect, select, text
from sqlalchemy import types as sqltypes

from sqlmpc.demo.generate import DEMO_VERSION
from sqlmpc.oracle import run_oracle

pytestmark = pytest.mark.mpc

QUERIES = Path(__file__).parent.parent / "queries"


@pytest.fixture(scope="module")
def engine(demo_path):
    engine = create_engine(f"sqlmpc:///{demo_path}")
    yield engine
    engine.dispose()


def same(a, b) -> bool:
    missing = (a is None or (isinstance(a, float) and math.isnan(a)),
               b is None or (isinstance(b, float) and math.isnan(b)))
    if any(missing):
        return all(missing)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def test_url_forms():
    from sqlmpc.sqlalchemy import SqlmpcDialect
    from sqlalchemy.engine import make_url

    dialect = SqlmpcDialect()
    assert dialect.create_connect_args(make_url("sqlmpc://")) == ([], {})
    assert dialect.create_connect_args(make_url("sqlmpc:////srv/fed.toml")) == ([], {"federation": "/srv/fed.toml"})
    assert dialect.create_connect_args(make_url("sqlmpc://?persons=2000&oracle=true")) == (
        [], {"persons": 2000, "oracle": True})


def test_demo_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLMPC_CACHE", str(tmp_path))     # generate a small demo, not the user's cache
    engine = create_engine("sqlmpc://?persons=2000")
    try:
        with engine.connect() as con:
            rows = con.execute(text("SELECT b.region, COUNT(*) AS n FROM bureau.persons b GROUP BY b.region")).all()
        # The default demo perturbs ad-hoc counts (docs/disclosure.md): each by at most max_deviation.
        assert abs(sum(n for _, n in rows) - 2000) <= 2 * len(rows)
        assert (tmp_path / f"demo-v{DEMO_VERSION}-2000" / "federation.toml").exists()
    finally:
        engine.dispose()


def test_reflection(engine, federation):
    insp = inspect(engine)
    assert insp.get_schema_names() == ["hospital", "insurer", "bureau"]
    assert set(insp.get_table_names(schema="hospital")) == {t.name for t in federation.party("hospital").tables}
    assert "patients" in insp.get_table_names(schema="hospital")
    assert insp.get_table_names(schema="bureau") == ["persons"]
    assert insp.has_table("claims", schema="insurer") and not insp.has_table("claims", schema="bureau")
    columns = {c["name"]: c for c in insp.get_columns("claims", schema="insurer")}
    assert list(columns) == ["pid", "year", "category", "cost_eur"]
    assert isinstance(columns["cost_eur"]["type"], sqltypes.Float)
    assert isinstance(columns["category"]["type"], sqltypes.String)
    assert columns["pid"]["comment"] == "key" and columns["cost_eur"]["comment"] == "measure"
    assert insp.get_view_names(schema="hospital") == []
    from sqlalchemy.exc import NoSuchTableError
    with pytest.raises(NoSuchTableError):
        insp.get_columns("nope", schema="hospital")


@pytest.mark.parametrize("name", ["small_cells_suppressed", "cost_by_diagnosis_region"])
def test_read_sql_equals_the_oracle(name, engine, federation, union_db):
    sql = (QUERIES / f"{name}.sql").read_text()
    df = pd.read_sql(text(sql), engine)
    oracle = run_oracle(sql, federation, union_db)
    assert list(df.columns) == oracle.columns
    assert len(df) == len(oracle.rows()) > 0
    got = df.astype(object).where(df.notna(), None).itertuples(index=False, name=None)
    for row, expected, suppressed in zip(got, oracle.rows(), oracle.suppressed):
        assert all(same(a, b) for a, b in zip(row, expected)), (row, expected)
        if suppressed:
            assert row[-1] is None
    if name == "small_cells_suppressed":
        assert any(oracle.suppressed)


def test_read_sql_with_bound_parameters(engine):
    sql = text("SELECT COUNT(*) AS n FROM hospital.patients p WHERE p.diagnosis = :d")
    ibd = pd.read_sql(sql, engine, params={"d": "IBD"})
    injected = pd.read_sql(sql, engine, params={"d": "IBD' OR '1'='1"})
    assert ibd["n"][0] >= 10
    assert injected["n"].isna().all()          # a plain string no patient has: suppressed


def test_core_select_compiles_to_the_dialect(engine):
    persons = Table("persons", MetaData(), schema="bureau", autoload_with=engine)
    query = select(persons.c.region, func.count().label("n")).group_by(persons.c.region).order_by(persons.c.region)
    assert "bureau.persons AS persons" in str(query.compile(engine))
    with engine.connect() as con:
        rows = con.execute(query).all()
    assert [r[0] for r in rows] == ["East", "North", "South", "West"]
    assert sum(r[1] for r in rows) == 2000


def test_core_limit_renders_a_number_not_a_parameter(engine):
    persons = Table("persons", MetaData(), schema="bureau", autoload_with=engine)
    query = (select(persons.c.region, func.count().label("n")).group_by(persons.c.region)
             .order_by(persons.c.region).limit(2).offset(1))
    compiled = str(query.compile(engine))
    assert "LIMIT 2" in compiled and "OFFSET 1" in compiled and "?" not in compiled
    with engine.connect() as con:
        rows = con.execute(query).all()
    assert [r[0] for r in rows] == ["North", "South"]


def test_table_names_without_schema_are_not_dotted(engine):
    insp = inspect(engine)
    assert insp.get_table_names() == []                       # parties are schemas; there is no default one
    assert all("." not in name for schema in insp.get_schema_names() for name in insp.get_table_names(schema))
    assert insp.has_table("patients", schema="hospital") and not insp.has_table("patients", schema="bureau")
