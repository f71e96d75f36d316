"""sqlmpc: one SQL question over several organisations' data; every row stays home.

    >>> import sqlmpc
    >>> con = sqlmpc.connect()          # the embedded demo federation
    >>> con.execute("SELECT b.region, COUNT(*) FROM bureau.persons b GROUP BY b.region").fetchall()
"""

from sqlmpc.dbapi import (  # noqa: F401
    BINARY, DATETIME, NUMBER, ROWID, STRING, Binary, Connection, Cursor, DatabaseError, DataError, Date,
    DateFromTicks, Error, IntegrityError, InterfaceError, InternalError, NotSupportedError,
    OperationalError, ProgrammingError, Time, TimeFromTicks, Timestamp, TimestampFromTicks, Warning,
    apilevel, connect, paramstyle, threadsafety,
)

__version__ = "0.1.0"
