"""A party's audit log: one JSON object per line, appended, never rewritten.

Each record says who asked what and what this party decided: time, query
id, role (coordinator or participant), analyst, query text, plan hash,
decision and reason, the leakage ledger (what was opened, how many values,
why), outcome, duration.  It holds no data values: of the result only the
number of released and suppressed cells and a hash of the released table.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path


class AuditLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        line = json.dumps(record, default=str, sort_keys=False) + "\n"
        with self._lock:
            # O_APPEND: every write lands at the end, even with another writer.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def started() -> float:
    return time.monotonic()
