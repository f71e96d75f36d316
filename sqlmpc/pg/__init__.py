"""PostgreSQL wire-protocol front end: ``sqlmpc pg`` lets psql, psycopg and BI tools reach a federation.

The protocol codec is pygwire (sans-I/O); this package adds sockets and TLS
(``server``), one client's conversation (``session``), the answers to the
catalog queries clients send (``catalog``), value encoding (``types``) and the
mapping of sqlmpc errors to SQLSTATEs (``errors``).

What a client reaches: the federation (every statement that names a party's
table, under the federation's policy) and a sealed catalog that answers one
SELECT over pg_catalog, information_schema and the parties' empty tables and
refuses everything else with 42501 (``catalog``); limits on message sizes,
login time and connections (``session.Limits``); every statement audited.
"""
