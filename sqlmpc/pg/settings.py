"""The run-time parameters a PostgreSQL client sees: reported at startup and answered to ``SHOW name``."""

from __future__ import annotations

from sqlmpc import errors

# Sent as ParameterStatus after authentication (clients read these, e.g. the version and encoding).
SERVER_PARAMETERS = {
    "server_version": "15.0 (sqlmpc)", "server_encoding": "UTF8", "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY", "integer_datetimes": "on", "standard_conforming_strings": "on",
    "TimeZone": "UTC", "IntervalStyle": "postgres", "is_superuser": "off",
}

# Answered to SHOW only (read-only federation, no transactions to isolate).
SHOW_ONLY = {
    "server_version_num": "150000", "transaction_isolation": "read committed",
    "transaction isolation level": "read committed", "transaction_read_only": "on",
    "default_transaction_read_only": "on", "search_path": "public", "max_identifier_length": "63",
    "lc_collate": "C", "lc_ctype": "C",
}


class UnknownSettingError(errors.ProgrammingError):
    """SHOW of a run-time parameter the front end does not have."""


def show(name: str) -> str:
    """The value of run-time parameter ``name`` (case-insensitive), as PostgreSQL's SHOW gives it."""
    key = " ".join(name.split()).lower()
    for table in (SERVER_PARAMETERS, SHOW_ONLY):
        for known, value in table.items():
            if known.lower() == key:
                return value
    raise UnknownSettingError(f'unrecognized configuration parameter "{name}"')
