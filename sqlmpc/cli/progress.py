"""Progress of a secure query on a terminal's stderr: the stage the parties are in and the time so far."""

from __future__ import annotations

import sys
import time


class StageProgress:
    """A ``progress(stage)`` callback that rewrites one stderr line; silent when stderr is not a terminal."""

    def __init__(self, label: str = "running", stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.enabled = _is_tty(self.stream)
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, stage: str) -> None:
        if not self.enabled:
            return
        self.stream.write(f"\r\x1b[K{self.label}: {stage} ... {time.monotonic() - self.started:.1f} s")
        self.stream.flush()
        self.shown = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.shown:                      # leave the line clean for the result or the error
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
