"""The embedded federation: every party in its own process on loopback (:mod:`sqlmpc.party.process`).

This is the same node code a real federation runs on three machines, and the same
coordinator (:mod:`sqlmpc.party.coordinator`); only the transport of control messages
differs (a pipe per party here: :mod:`sqlmpc.party.pipes`).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from sqlmpc import errors
from sqlmpc.catalog import Federation
from sqlmpc.demo import generate
from sqlmpc.demo.generate import DEMO_VERSION
from sqlmpc.party.audit import AuditLog
from sqlmpc.party.coordinator import Coordinator
from sqlmpc.party.pipes import PipeTransport
from sqlmpc.result import Result
from sqlmpc.sql import Query

STATE_ENV = "SQLMPC_STATE"

def state_dir(federation_path: str | Path, state: str | Path | None = None) -> Path:
    """Where an embedded federation keeps its audit logs.

    ``state`` if given, else ``$SQLMPC_STATE``, else ``sqlmpc-state`` next to the
    federation file (for the demo: in the cache directory).  The coordinator's log is
    ``<state>/audit.jsonl``, each party's ``<state>/<party>/audit.jsonl`` — the layout of
    ``sqlmpc serve --state <state>/<party>``.
    """
    if state is None:
        state = os.environ.get(STATE_ENV) or Path(federation_path).resolve().parent / "sqlmpc-state"
    return Path(state)


def local_analyst() -> str:
    """The analyst of an embedded federation: the operating-system user running it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class EmbeddedFederation:
    """Start one process per party; run queries through all of them.

    Every query is audited as on networked nodes (``state_dir``): the coordinator
    (this process) logs its decision, each party process logs its own.
    """

    dry_run = False

    def __init__(self, federation: Federation, *, timeout: float = 30.0, state: str | Path | None = None):
        if federation.path is None:
            raise errors.InterfaceError("the federation must be loaded from a file")
        self.timeout = timeout
        self.state = state_dir(federation.path, state)
        audit = AuditLog(self.state / "audit.jsonl")     # fails early (ConfigError) if not writable
        self.party_audit = {p.name: AuditLog(self.state / p.name / "audit.jsonl").path for p in federation.parties}
        self.transport = PipeTransport(federation, self.party_audit, timeout)
        self.coordinator = Coordinator(f"embedded (pid {os.getpid()})", federation, self.transport, audit,
                                       timeout=timeout)
        self.last_stats = None
        self.transport.start()

    @property
    def federation(self) -> Federation:
        return self.coordinator.federation

    @property
    def parties(self):
        """The party processes (name, process, pipe)."""
        return self.transport.parties

    def restart(self) -> None:
        """Stop the parties and start them afresh (after a cancelled or failed query)."""
        self.transport.close()
        self.transport.start()

    def reload(self, federation: Federation) -> None:
        """Point every party at another federation file (same parties), e.g. new test data."""
        if [p.name for p in federation.parties] != [p.name for p in self.parties]:
            raise errors.InterfaceError("reload needs the same parties")
        self.transport.reload(federation)
        self.coordinator.federation = federation

    def query(self, query: str | Query, params=None, progress=None) -> Result:
        """Run a query through every party; ``progress(stage)`` hears the secure stages as they start."""
        if self.transport.stale:            # parties stopped after a failure: fresh ones first
            self.restart()
        released = self.coordinator.run(query, params, analyst=local_analyst(), progress=progress)
        self.last_stats = released.answers
        return released.result

    def close(self) -> None:
        """Stop the parties (a busy one at once, writing its audit record of the query first)."""
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def demo_federation_path(persons: int = 5000, seed: int | None = None) -> Path:
    """The default demo federation, generated once into the user's cache directory."""
    base = Path(os.environ.get("SQLMPC_CACHE", Path.home() / ".cache" / "sqlmpc"))
    # The generator's version is in the name: a cached demo of an older generator is not reused.
    out = base / (f"demo-v{DEMO_VERSION}-{persons}" + (f"-{seed}" if seed is not None else ""))
    toml = out / "federation.toml"
    if not toml.exists():
        kwargs = {"seed": seed} if seed is not None else {}
        generate(out, persons=persons, **kwargs)
    return toml
