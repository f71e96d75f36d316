"""Apache Superset engine spec for ``sqlmpc://`` databases (registered through ``superset.db_engine_specs``).

Superset is not a dependency: this module is only imported by Superset itself,
which finds it through the entry point.  The spec tells Superset what the
dialect offers: joins, no subqueries, no time-grain functions, read-only.
"""

from __future__ import annotations

from superset.db_engine_specs.base import BaseEngineSpec


class SqlmpcEngineSpec(BaseEngineSpec):
    engine = "sqlmpc"
    engine_name = "sqlmpc (federated SQL over MPC)"
    default_driver = "sqlmpc"
    sqlalchemy_uri_placeholder = "sqlmpc:///path/to/federation.toml"

    allows_joins = True
    allows_subqueries = False          # only UNION ALL of party tables in FROM
    allows_alias_in_select = True
    allows_alias_in_orderby = True
    allows_sql_comments = True
    allows_cte_in_subquery = False
    supports_file_upload = False
    supports_dynamic_schema = False

    # Dimensions are public domains (years, bands, regions): a chart groups by the column itself.
    _time_grain_expressions = {None: "{col}"}
