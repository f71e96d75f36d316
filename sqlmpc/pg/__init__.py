"""PostgreSQL wire-protocol front end: ``sqlmpc pg`` lets psql, psycopg and BI tools reach a federation.

The protocol codec is pygwire (sans-I/O); this package adds sockets and TLS
(``server``), one client's conversation (``session``), the answers to the
catalog queries clients send (``catalog``), value encoding (``types``) and the
mapping of sqlmpc errors to SQLSTATEs (``errors``).
"""
