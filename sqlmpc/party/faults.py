"""Failure injection, for tests of what happens when a query fails mid-way.

``SQLMPC_FAIL_AFTER_OPENINGS=n`` in a party process's environment makes every
query at that party fail with :class:`InjectedFailure` just before the
(n+1)-th entry of its leakage ledger: the first n openings really happen in
the MPC, the next does not.  Set it for every party of a federation (the
embedded federation's party processes inherit the environment of the process
that starts them), or the others wait for the failed party until their
timeout.  Unset in production; it never opens anything itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlmpc import errors
from sqlmpc.mpc.reveal import Ledger

FAIL_AFTER_OPENINGS = "SQLMPC_FAIL_AFTER_OPENINGS"


class InjectedFailure(errors.OperationalError):
    """A failure asked for by ``SQLMPC_FAIL_AFTER_OPENINGS``."""


@dataclass
class _Tripwire(Ledger):
    limit: int = 0

    def record(self, what: str, count: int, why: str):
        if len(self.entries) >= self.limit:
            raise InjectedFailure(f"injected failure ({FAIL_AFTER_OPENINGS}={self.limit}) "
                                  f"before opening {what!r}")
        return super().record(what, count, why)


def armed(ledger: Ledger) -> Ledger:
    """``ledger`` itself, or (with the variable set) a ledger that fails at the limit and
    records into the same entry list, so the caller still sees what was opened."""
    value = os.environ.get(FAIL_AFTER_OPENINGS)
    if not value:
        return ledger
    try:
        limit = int(value)
    except ValueError:
        raise errors.ConfigError(f"{FAIL_AFTER_OPENINGS}={value!r}: expected a number of openings") from None
    return _Tripwire(entries=ledger.entries, limit=limit)
