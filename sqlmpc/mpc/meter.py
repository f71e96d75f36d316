"""What each secure stage costs this party: wall and CPU seconds, bytes sent, peak memory.

Peak memory is per stage: Linux lets a process reset its high-water mark
(``/proc/self/clear_refs``), so each stage's peak is its own, not the query's so far.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlmpc.mpc import runtime

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_mb() -> float:
    """This process's peak resident memory since the last reset (MB); 0 where /proc is missing."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak() -> None:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def bytes_sent(mpc) -> int:
    """Bytes this party has sent to its peers in the running session (MPyC counts them)."""
    total = 0
    for peer in getattr(mpc, "parties", []):
        protocol = getattr(peer, "protocol", None)
        total += getattr(protocol, "nbytes_sent", 0) if peer.pid != mpc.pid else 0
    return total


class StageMeter:
    """Stages entered one after another; ``stats[stage]`` sums what each visit cost."""

    def __init__(self, mpc, workers=None):
        self.mpc = mpc
        self.pool = workers                 # sqlmpc.mpc.workers.Workers: their costs are the party's too
        self.stats: dict[str, dict[str, float]] = {}
        self._open = None
        self.counts = runtime.count_primitives(mpc) if hasattr(mpc, "parties") else {}
        self.before_mb = peak_rss_mb()      # node start and the local stage, before the first reset

    def enter(self, stage: str | None) -> None:
        now = (time.perf_counter(), time.process_time(), bytes_sent(self.mpc), dict(self.counts))
        if self._open is not None:
            name, (wall, cpu, sent, counts) = self._open
            s = self.stats.setdefault(name, {"seconds": 0.0, "cpu_s": 0.0, "bytes_sent": 0, "peak_rss_mb": 0.0,
                                             "primitives": {}})
            s["seconds"] += now[0] - wall
            s["cpu_s"] += now[1] - cpu
            s["bytes_sent"] += now[2] - sent
            s["peak_rss_mb"] = max(s["peak_rss_mb"], peak_rss_mb())
            for (kind, bits), total in now[3].items():       # "multiplications/128": elements
                done = total - counts.get((kind, bits), 0)
                if done:
                    key = f"{kind}/{bits}"
                    s["primitives"][key] = s["primitives"].get(key, 0) + done
            for costs in self.pool.costs if self.pool is not None else ():     # the stage's worker jobs
                s["worker_cpu_s"] = s.get("worker_cpu_s", 0.0) + costs.get("cpu_s", 0.0)
                s["worker_bytes_sent"] = s.get("worker_bytes_sent", 0) + costs.get("bytes_sent", 0)
                s["worker_peak_rss_mb"] = max(s.get("worker_peak_rss_mb", 0.0), costs.get("peak_rss_mb", 0.0))
                for key, done in costs.get("primitives", {}).items():     # the plan's primitives, wherever run
                    s["primitives"][key] = s["primitives"].get(key, 0) + done
            if self.pool is not None:
                self.pool.costs.clear()
        reset_peak()
        self._open = (stage, now) if stage else None

    @property
    def peak_mb(self) -> float:
        """The peak over the whole query (the resets hide it from getrusage)."""
        return max([self.before_mb] + [s["peak_rss_mb"] for s in self.stats.values()])

    @property
    def seconds(self) -> dict[str, float]:
        return {name: s["seconds"] for name, s in self.stats.items()}
