"""The secure part of a plan, run by every party in the same MPyC session (SPMD).

Each party brings only its own local results; every other array it handles
is a secret share.  Vectorised throughout: one secure array per column,
never a Python loop per row.

Steps (join mode, :mod:`sqlmpc.mpc.join`): input → shuffle by resharing → PRF
tokens → join in the clear on tokens → gather by public indices → row flags and
cell indicators → moments per cell (one matrix product).  Local mode skips the
row steps: owners pre-aggregated per cell.  Then, per cell
(:mod:`sqlmpc.mpc.cells`): release rules → secondary suppression → HAVING →
reveal.
"""

from __future__ import annotations

import functools
import gc

import numpy as np
import pyarrow as pa

from sqlmpc.catalog import DEFAULT_BATCH_ROWS
from sqlmpc.mpc.cells import CellPhase
from sqlmpc.mpc.join import JoinMode, expr_bound, padded_size
from sqlmpc.mpc.meter import StageMeter
from sqlmpc.mpc.local_mode import perturbed_local_moments
from sqlmpc.mpc.record_keys import key_bound
from sqlmpc.mpc.reveal import current_ledger
from sqlmpc.plan.plan import KEYED, LocalPart, Plan

MAX_ROWS = 2 ** 40     # declared maximum of rows per party in local mode (sets bit lengths)


class Engine(JoinMode, CellPhase):
    def __init__(self, mpc, plan: Plan, party_index: dict[str, int], me: str,
                 local: dict[tuple[str, int], pa.Table], progress=None, workers=None):
        self.mpc = mpc
        self.plan = plan
        self.index = party_index
        self.me = me
        self.local = local            # (relation, part) -> this party's local result
        self.report = progress or (lambda stage: None)
        self.workers = workers        # sqlmpc.mpc.workers.Workers: more sessions for the per-row stages
        self.meter = StageMeter(mpc, workers)
        self.stage = None
        federation = getattr(getattr(plan, "query", None), "federation", None)
        self.batch = getattr(federation, "batch_rows", DEFAULT_BATCH_ROWS)    # rows per batch (bounds memory)

    @property
    def timings(self) -> dict[str, float]:
        return self.meter.seconds

    def progress(self, stage: str) -> None:
        """Enter a stage (input, shuffle, join, aggregate, threshold, reveal): report it and meter it."""
        self.meter.enter(stage)
        self.stage = stage
        if stage:
            self.report(stage)

    def tick(self, done: int, total: int, what: str) -> None:
        """How far a stage of several batches is, so that a minutes-long stage's line keeps moving."""
        if total > self.batch and self.stage:
            self.report(f"{self.stage} ({done:,} of {total:,} {what})")

    # -- input -------------------------------------------------------------

    async def sizes(self) -> dict[tuple[str, int], int]:
        """Every party learns the padded size of every local result (declared leakage: input sizes).

        In join mode each local result is padded with dummy rows to the next size of a
        geometric series (:func:`padded_size`), so that a size tells at most its bucket;
        in local mode every input is the grid.
        """
        G = self.plan.grid.size
        mine = {f"{r}/{i}": G if self.local_totals_only() else padded_size(t.num_rows)
                for (r, i), t in self.local.items()}
        everyone = await self.mpc.transfer(mine)
        current_ledger().record("input sizes", len(self.plan.parts), "padded rows of each local result")
        sizes = {}
        for d in everyone:
            for key, n in d.items():
                r, i = key.rsplit("/", 1)
                sizes[(r, int(i))] = int(n)
        return sizes

    def input_matrix(self, part: LocalPart, n: int, width: int, values: np.ndarray | None, sectype=None):
        """Secret-share the owner's integer matrix (n x width); the others pass zeros of that shape."""
        owner = self.index[part.party]
        if n == 0 or width == 0:
            return None
        sectype = sectype or self.secint
        chunks = []
        for lo in range(0, n, self.batch):     # a batch at a time: the sharing's copies stay small
            hi = min(n, lo + self.batch)
            data = values[lo:hi] if self.mpc.pid == owner else np.zeros((hi - lo, width), dtype=object)
            chunks.append(self.mpc.input(sectype.array(data), senders=owner))
            self.tick(hi, n, f"rows of {part.relation}")
        return chunks[0] if len(chunks) == 1 else self.mpc.np_vstack(chunks)

    # -- local mode ----------------------------------------------------------

    def local_totals_only(self) -> bool:
        """Local mode whose inputs are the cell totals alone (a perturbed plan adds its rows' record keys)."""
        return self.plan.mode == "local" and self.plan.perturbation is None

    async def run_local_mode(self, sizes) -> dict[str, object]:
        if self.plan.perturbation is not None:
            return await perturbed_local_moments(self, sizes)
        G = self.plan.grid.size
        names = [m.name for m in self.plan.moments]
        totals = None
        for part in self.plan.parts:
            values = None
            if part.party == self.me:
                t = self.local[(part.relation, part.part)]
                values = np.zeros((G, len(names)), dtype=object)
                cells = t.column("cell").to_pylist()
                for j, name in enumerate(names):
                    values[cells, j] = [int(v) for v in t.column(name).to_pylist()]
            x = self.input_matrix(part, G, len(names), values)
            totals = x if totals is None else totals + x      # the parts' persons are disjoint: totals add up
        return {name: totals[:, j] for j, name in enumerate(names)}

    def empty_moments(self):
        G = self.plan.grid.size
        zero = self.secint.array(np.zeros(G, dtype=object))
        return {m.name: zero for m in self.plan.moments}

    # -- driver ------------------------------------------------------------------

    async def run(self) -> pa.Table:
        # Millions of field elements live in object arrays, which the cyclic garbage collector
        # would traverse again and again; the engine makes few cycles, so it pauses during the run.
        gc.disable()
        try:
            return await self._run()
        finally:
            gc.enable()

    async def _run(self) -> pa.Table:
        self.progress("input")           # the input sizes are its first opening
        sizes = await self.sizes()
        # Row phase: the field holds 64-bit key hashes and every moment (a sum over at most
        # `rows` rows).  Cell phase: exact ratios need more room; moments are converted then.
        rows = self.row_bound(sizes)
        row_bits = max(66, (rows * self.max_expr_bound()).bit_length() + 2,
                       max(self.moment_bounds(rows).values(), default=1).bit_length() + 2)
        self.secint = self.mpc.SecInt(row_bits)
        if self.plan.mode == "local":
            moments = await self.run_local_mode(sizes)
        else:
            moments, rows = await self.run_join_mode(sizes)
        bounds = self.moment_bounds(rows)
        cell_bits = self.cell_bits(bounds)
        if cell_bits > row_bits:
            big = self.mpc.SecInt(cell_bits)
            moments = {name: self.convert(v, big) for name, v in moments.items()}
            self.secint = big
        cells = await self.release(moments, bounds)
        self.progress("")
        return cells

    def convert(self, x, sectype):
        values = self.mpc.convert([x[i] for i in range(x.shape[0])], sectype)
        return self.mpc.np_fromlist(values)

    def row_bound(self, sizes) -> int:
        """An upper bound on the rows a moment sums over, known before any input."""
        if self.local_totals_only():
            return MAX_ROWS
        per_relation = [max(1, sum(n for (r, _), n in sizes.items() if r == rel)) for rel in self.plan.relations]
        every_combination = int(np.prod(per_relation, dtype=object))     # a many-to-many join
        if not all(sum(c.kind == "key" for c in p.columns) == 1 for p in self.plan.parts):
            return every_combination
        # One key column per relation, so every join is on it: a root row meets at most
        # key_rows(r) rows of each other relation r, those of its key.
        fanout = int(np.prod([self.key_rows(r) for r in self.plan.relations[1:]], dtype=object))
        return min(every_combination, per_relation[0] * fanout)

    def key_rows(self, relation: str) -> int:
        """The most rows of a relation's input that share one key value."""
        declared = self.plan.rows_per_key[self.plan.relations.index(relation)]
        if not self.plan.per_key:
            return declared
        parts = self.plan.parts_of(relation)     # pre-aggregated: one row per key and cell of each part
        return min(declared, len(parts) * max(1, parts[0].column("cell").bound))

    def person_rows(self) -> int:
        """The most joined rows one person has in one cell: what one contribution sums over."""
        if self.plan.per_key:                    # one row per key and cell of each part
            return int(np.prod([len(self.plan.parts_of(r)) for r in self.plan.relations], dtype=object))
        return int(np.prod([self.key_rows(r) for r in self.plan.relations], dtype=object))

    @functools.cached_property
    def local_columns(self) -> dict:
        """(relation, local column name) -> its LocalColumn (scale and declared bound)."""
        return {(p.relation, c.name): c for p in self.plan.parts for c in p.columns}

    def max_expr_bound(self) -> int:
        return max([expr_bound(m.expr, self.local_columns) for m in self.plan.moments] + [1])

    def moment_bounds(self, rows: int) -> dict[str, int]:
        """|moment| ≤ rows × bound of its row expression: sets the field size for exact ratios."""
        locals_ = self.local_columns
        rows = max(1, rows)
        out = {}
        for m in self.plan.moments:
            e = expr_bound(m.expr, locals_)
            if m.kind in KEYED:                              # Σ of record keys (sqlmpc.mpc.record_keys)
                out[m.name] = rows * e * key_bound(len(self.index))
            elif m.kind != "sum2":
                out[m.name] = rows * e
            else:                                            # Σ c² ≤ Σ|c| · max|c|, max|c| ≤ person_rows · e
                out[m.name] = rows * e * e * self.person_rows()
        return out if self.plan.perturbation is None else self.plan.perturbation.inflate(out)
