"""Superset check (not collected by pytest itself): a ``sqlmpc://`` database in a real Superset.

tests/test_superset.py runs it in CI (slow): it makes a throw-away virtual environment with Superset and
sqlmpc and runs this script with that environment's Python.  By hand (Superset first, then sqlmpc over it:
their sqlglot pins differ, see tests/test_superset.py):

    python3 -m venv /tmp/ss && /tmp/ss/bin/pip install 'apache-superset==6.1.0' 'flask-caching<2.4' cachetools
    /tmp/ss/bin/pip install -e .
    SUPERSET_CONFIG_PATH=tests/superset_config.py /tmp/ss/bin/superset db upgrade
    SUPERSET_CONFIG_PATH=tests/superset_config.py /tmp/ss/bin/python tests/superset_check.py FEDERATION.toml

It checks that Superset picks the engine spec from the entry point, reflects a
party's table, and that a bar chart's query (COUNT(*) by a dimension) returns
what the DB-API returns.  Exit code 0 on success.
"""

from __future__ import annotations

import sys

import sqlmpc


def main(federation: str) -> int:
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from superset import db
        from superset.connectors.sqla.models import SqlaTable
        from superset.models.core import Database

        from sqlmpc.superset import SqlmpcEngineSpec

        name = "sqlmpc federation"
        database = db.session.query(Database).filter_by(database_name=name).one_or_none()
        if database is None:
            database = Database(database_name=name)
            db.session.add(database)
        database.sqlalchemy_uri = f"sqlmpc:///{federation}"
        db.session.commit()
        assert database.db_engine_spec is SqlmpcEngineSpec, database.db_engine_spec
        table = db.session.query(SqlaTable).filter_by(table_name="persons", schema="bureau").one_or_none()
        if table is None:
            table = SqlaTable(table_name="persons", schema="bureau", database=database)
            db.session.add(table)
        table.fetch_metadata()
        assert "region" in {c.column_name for c in table.columns}
        # What a bar chart of COUNT(*) by region asks for.
        query = {"columns": ["region"], "metrics": ["count"], "is_timeseries": False, "row_limit": 100,
                 "filter": [], "extras": {}, "orderby": [], "granularity": None, "from_dttm": None,
                 "to_dttm": None}
        print(table.get_query_str(query))
        result = table.query(query)
        assert result.status == "success", (result.status, result.error_message)
        chart = {tuple(r) for r in result.df.itertuples(index=False)}
    with sqlmpc.connect(federation) as con:
        expected = set(con.execute("SELECT b.region, COUNT(*) FROM bureau.persons b GROUP BY b.region").fetchall())
    assert chart == expected, (chart, expected)
    print(f"ok: Superset chart rows {sorted(chart)} equal the DB-API's")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
