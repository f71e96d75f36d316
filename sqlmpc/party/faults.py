"""Failure injection, for tests of what happens when a query fails mid-way.

``SQLMPC_FAIL_AFTER_OPENINGS=n`` in a party process's environment makes every
query at that party fail with :class:`InjectedFailure` just before the
(n+1)-th entry of its leakage ledger: the first n openings really happen in
the MPC, the next does not.  Set it for every party of a federation (the
embedded federation's party processes inherit the environment of the process
that starts them); ``SQLMPC_FAIL_PARTY=name`` limits it to that party, whose
peers then learn of the failure from the coordinator; ``SQLMPC_FAIL_WITH=MemoryError`` makes
the failure a MemoryError (a party out of memory), ``SQLMPC_FAIL_WITH=engine`` a DuckDB error that
quotes a row's value (``ENGINE_VALUE``), as an engine's own message does.  Unset in production; it never opens anything itself.

``SQLMPC_PAUSE_AFTER_OPENINGS=n`` with ``SQLMPC_PAUSE_FILE=path`` makes a party
stall instead, just before its (n+1)-th opening: it creates the file and waits,
holding up the MPC, until the file is removed (at most 120 s).  A test sets it for
one party, waits for the file, and then knows the query is under way at that
point — to kill or stop the party there, not after a guessed delay.

``SQLMPC_FAIL_WORKER=path``: while the file exists, a worker process
(:mod:`sqlmpc.mpc.workers`) fails before its first opening; the first to fail removes the
file, so one worker of one party fails, once (as out of memory with ``SQLMPC_FAIL_WITH``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from sqlmpc import errors
from sqlmpc.mpc.reveal import Ledger

FAIL_AFTER_OPENINGS = "SQLMPC_FAIL_AFTER_OPENINGS"
FAIL_PARTY = "SQLMPC_FAIL_PARTY"        # with it, only that party fails
FAIL_WITH = "SQLMPC_FAIL_WITH"          # "MemoryError": fail as a party out of memory does; "engine": as DuckDB
ENGINE_VALUE = "102045.25"              # the row value an injected engine error quotes
PAUSE_AFTER_OPENINGS = "SQLMPC_PAUSE_AFTER_OPENINGS"
PAUSE_FILE = "SQLMPC_PAUSE_FILE"
FAIL_WORKER = "SQLMPC_FAIL_WORKER"
LONGEST_PAUSE = 120.0


class InjectedFailure(errors.OperationalError):
    """A failure asked for by ``SQLMPC_FAIL_AFTER_OPENINGS``."""


def _failure(message: str) -> BaseException:
    kind = os.environ.get(FAIL_WITH)
    if kind == "MemoryError":
        return MemoryError(message)
    if kind == "engine":
        return duckdb.ConversionException(f"Conversion Error: Type DOUBLE with value {ENGINE_VALUE} can't be cast "
                                          f"because the value is out of range ({message})")
    return InjectedFailure(message)


@dataclass
class _Tripwire(Ledger):
    limit: int = 0

    def record(self, what: str, count: int, why: str):
        if len(self.entries) >= self.limit:
            message = f"injected failure ({FAIL_AFTER_OPENINGS}={self.limit}) before opening {what!r}"
            raise _failure(message)
        return super().record(what, count, why)


@dataclass
class _Pause(Ledger):
    limit: int = 0
    flag: Path | None = None

    def record(self, what: str, count: int, why: str):
        if len(self.entries) == self.limit and self.flag is not None:
            self.flag.touch()
            deadline = time.monotonic() + LONGEST_PAUSE
            while self.flag.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().record(what, count, why)


def _limit(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.ConfigError(f"{name}={value!r}: expected a number of openings") from None


@dataclass
class _WorkerTripwire(Ledger):
    flag: Path | None = None

    def record(self, what: str, count: int, why: str):
        try:
            self.flag.unlink()
        except FileNotFoundError:
            return super().record(what, count, why)
        message = f"injected failure ({FAIL_WORKER}) in a worker before opening {what!r}"
        raise _failure(message)


def armed_worker(ledger: Ledger) -> Ledger:
    """A worker's ledger, or (with ``SQLMPC_FAIL_WORKER`` set) one that fails while its file exists."""
    flag = os.environ.get(FAIL_WORKER)
    return _WorkerTripwire(entries=ledger.entries, flag=Path(flag)) if flag else ledger


def armed(ledger: Ledger, party: str | None = None) -> Ledger:
    """``ledger`` itself, or (with the variable set) a ledger that fails at the limit and
    records into the same entry list, so the caller still sees what was opened."""
    fail, pause = _limit(FAIL_AFTER_OPENINGS), _limit(PAUSE_AFTER_OPENINGS)
    if fail is not None and os.environ.get(FAIL_PARTY, party) == party:
        return _Tripwire(entries=ledger.entries, limit=fail)
    if pause is not None and os.environ.get(PAUSE_FILE):
        return _Pause(entries=ledger.entries, limit=pause, flag=Path(os.environ[PAUSE_FILE]))
    return ledger
