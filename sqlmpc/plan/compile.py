"""The one entry from a query to its plan: parse once, bind once, plan once.

Every path — the shell, ``run``, EXPLAIN, the DB-API driver, the embedded and
the networked federation, each party re-validating a proposal — calls
:func:`compile`.  The plan carries the query's *canonical text* (the bound
tree printed in DuckDB's dialect, parameters as literals): it is what the
coordinator sends to the parties, and what the plan hash covers, so a query
has the same plan hash however it was written down or submitted.
"""

from __future__ import annotations

from typing import Sequence

from sqlmpc.catalog import Federation
from sqlmpc.plan.bind import bind
from sqlmpc.plan.query import BoundQuery
from sqlmpc.plan.plan import Plan
from sqlmpc.plan.planner import plan_query
from sqlmpc.sql import Query, parse_query
from sqlmpc.sql.params import bind_parameters


def bind_query(query: str | Query, federation: Federation, params: Sequence | None = None) -> BoundQuery:
    """Parse (when given text), put the parameters in and bind against the federation's catalog.

    Errors point at the text as the analyst wrote it.
    """
    if isinstance(query, str):
        query = Query(parse_query(query), query)
    return bind(bind_parameters(query.tree, params), federation, query.sql)


def compile(query: str | Query, federation: Federation, params: Sequence | None = None) -> Plan:  # noqa: A001
    """The plan of a query: what each party computes alone, what runs in MPC, what is opened."""
    return plan_query(bind_query(query, federation, params))
