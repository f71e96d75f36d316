"""A party node: its own data, its own policy check, its share of the MPC.

The node never holds another party's data: its DuckDB registers only its own
tables.  For each query it parses, binds, checks policy and plans on its own,
and refuses unless its plan hash equals the proposer's; then it runs its local
parts and takes part in the secure computation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from sqlmpc import errors
from sqlmpc.catalog import Federation
from sqlmpc.local.sources import LocalData
from sqlmpc.mpc import session as mpc_session
from sqlmpc.mpc.engine import Engine
from sqlmpc.mpc.reveal import Ledger, ledger_scope
from sqlmpc.mpc.session import MpcSession, run_in_fresh_loop
from sqlmpc.mpc.workers import Workers, start_fork_server
from sqlmpc.party import faults
from sqlmpc.party.wire import rebuild
from sqlmpc.plan.compile import compile
from sqlmpc.plan.plan import Plan


@dataclass
class Outcome:
    cells: pa.Table
    ledger: list
    digest: str
    seconds: float
    timings: dict       # seconds per stage: local, input, shuffle, join, aggregate, threshold, reveal
    stages: dict = None  # per secure stage: seconds, cpu_s, bytes_sent, peak_rss_mb (sqlmpc.mpc.meter)
    peak_mb: float = 0.0  # this party's peak resident memory over the query


class PartyNode:
    def __init__(self, federation: Federation, party: str):
        if federation.party(party) is None:
            raise errors.ConfigError(f"party '{party}' is not in the federation")
        self.federation = federation
        self.party = party
        self.index = {p.name: i for i, p in enumerate(federation.parties)}
        # Own files in memory (no file access after this); own databases (PostgreSQL, Spark) connected.
        self.data = LocalData.open(federation, party)
        self.db: duckdb.DuckDBPyConnection = self.data.db
        if federation.party(party).workers > 1:
            start_fork_server()

    def admit(self, sql: str, digest: str | None) -> Plan:
        """This party's own decision on a proposed query: plan it and compare plan hashes."""
        plan = compile(sql, self.federation)      # parse, bind (policy) and plan: on its own
        if digest is not None and plan.digest != digest:
            raise errors.QueryRefusedError(
                "plan hash mismatch: this party planned the query differently "
                f"({plan.digest[:12]} != {digest[:12]}); are the catalogs identical?", party=self.party)
        for part in plan.parts_at(self.party):
            self.data.prepare(part.sql)        # a construct its database cannot express is refused now
        return plan

    def run_local(self, plan: Plan) -> dict[tuple[str, int], pa.Table]:
        """Run this party's local parts where its tables live (its DuckDB, PostgreSQL or Spark)."""
        return self.data.run_parts(plan.parts_at(self.party))

    async def run_secure(self, mpc, plan: Plan, local, progress=None, workers=None):
        engine = Engine(mpc, plan, self.index, self.party, local, progress, workers)
        return await engine.run(), engine.meter

    async def check_local_stages(self, mpc, failed: errors.Error | None) -> None:
        """Every party tells whether its local stage ran; a party whose database failed (or whose
        table no longer fits the catalog) fails the query on every party at once, with its error."""
        reports = await mpc.transfer(None if failed is None else (type(failed).__name__, errors.shareable(failed)))
        for name, report in zip(self.index, reports):
            if report is not None:
                raise failed if name == self.party else rebuild({"error": report[0], "message": report[1]}, name)

    def execute_plan(self, plan: Plan, addresses: list[tuple[str, int]], *, progress=None, timeout: float = 30.0,
                     session=None, guard=None, ledger: Ledger | None = None, workers=(),
                     max_workers: int = 1) -> Outcome:
        """Run an admitted plan: local parts, then the secure part in a fresh MPC session.

        ``workers``: the address lists of the query's further sessions, one per worker
        (:mod:`sqlmpc.mpc.workers`); this party runs at most ``max_workers`` sessions.

        ``session`` replaces the plain loopback session (a networked node passes one with TLS);
        ``guard`` wraps the secure computation (a networked node's watchdog).  ``ledger``
        receives every opening as it happens: after a failure it holds what was opened
        before it (for the audit log).
        """
        stage = "local"

        def enter(name: str) -> None:        # where this party is: an error names it (``exc.stage``)
            nonlocal stage
            stage = name.partition(" (")[0]  # a batch's progress, "join (64 of 4,377 keys)", is in "join"
            if progress is not None:
                progress(name)

        try:
            if 1 + len(workers) > max_workers:
                raise errors.PartyError(f"the query asks for {1 + len(workers)} MPC sessions per party; this "
                                        f"party runs at most {max_workers} (its 'workers')", party=self.party)
            return self._execute(plan, addresses, enter, timeout, session, guard, ledger, workers)
        except Exception as exc:
            if isinstance(exc, MemoryError) or any(isinstance(e, MemoryError) for e in mpc_session.errors):
                exc = errors.OutOfMemoryError(
                    f"ran out of memory in stage '{stage}'; set a smaller batch_rows under [federation] "
                    f"(now {self.federation.batch_rows:,}) or give the party more memory", party=self.party)
            exc.stage = getattr(exc, "stage", None) or stage
            raise exc

    def _execute(self, plan: Plan, addresses, enter, timeout: float, session, guard, ledger, workers) -> Outcome:
        started = time.perf_counter()
        enter("local")
        try:
            local, failed = self.run_local(plan), None
        except (errors.SourceError, errors.DataFileError) as exc:
            local, failed = {}, exc         # still meet the peers: they learn it at once instead of timing out
        local_seconds = time.perf_counter() - started
        me = self.index[self.party]
        # The plain session (embedded parties): listen on this party's own address only (loopback).
        session = session or MpcSession(me, addresses, timeout=timeout, listen_host=addresses[me][0])
        ledger = Ledger() if ledger is None else ledger
        pool = Workers(me, workers, session.tls, timeout, session.listen_host) if workers else None

        async def main():
            with ledger_scope(faults.armed(ledger, self.party)):
                async with session as mpc:
                    # The first wait on the peers: a peer that connected and stays silent fails it in time.
                    checked = self.check_local_stages(mpc, failed)
                    await (guard(checked) if guard is not None else checked)
                    if pool is not None:
                        pool.start()            # the workers connect to their peers meanwhile
                    secure = self.run_secure(mpc, plan, local, enter, pool)
                    cells, meter = await (guard(secure) if guard is not None else secure)
                    if pool is not None:
                        await pool.close()
                return cells, list(ledger.entries), meter

        try:
            cells, entries, meter = run_in_fresh_loop(main())
        except RuntimeError as exc:
            # An sqlmpc error raised inside an MPyC coroutine stops the loop ("Event loop
            # stopped before Future completed"); report the error itself.
            cause = next((e for e in mpc_session.errors if isinstance(e, errors.Error)), None)
            if cause is None or isinstance(exc, mpc_session.SessionError):
                raise
            raise cause from exc
        finally:
            if pool is not None:
                pool.kill()             # a failed query's workers (after a success: none are left)
        timings = {"local": local_seconds, **meter.seconds}
        return Outcome(cells, entries, plan.digest, time.perf_counter() - started, timings, meter.stats,
                       meter.peak_mb)
