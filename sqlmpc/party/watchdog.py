"""Liveness of the MPC data plane: a dead or stalled peer fails the query, naming the peer.

MPyC on its own does not notice a peer that goes away: a closed connection
only deregisters the peer (the computation then waits forever for its next
message) and a reset connection raises inside an event-loop callback.  A
party node therefore installs two small hooks on MPyC's ``MessageExchanger``
(``install()``, once per process): every received chunk stamps the peer's
last activity, and a lost connection is recorded instead of raised.
``guard()`` runs the secure computation next to a watchdog that fails it

* at once when a peer's connection is lost ("party 'x' closed its MPC
  connection"), and
* when no peer has sent anything for ``timeout`` seconds of *live* event
  loop time (a long local step that blocks the loop does not count as
  silence); the peer this party waits on is named.  A party that waits on
  several peers cannot tell which one stalls: it names the one silent longest,
  GUESS_DELAY seconds later, and the coordinator reports that guess only when
  no party that waits on one peer alone has answered.
"""

from __future__ import annotations

import asyncio
import time

from sqlmpc import errors
from sqlmpc.mpc import runtime

_last: dict[int, float] = {}      # peer pid -> monotonic time of its last message
_lost: dict[int, str] = {}        # peer pid -> why its connection ended (during a guarded computation)
_activity = 0                     # bumped on every received chunk
_guarding = False
GUESS_DELAY = 2.0                 # seconds a party that can only guess the stalled peer waits beyond the timeout


def install() -> None:
    """Hook MPyC's MessageExchanger (idempotent; affects only this process)."""
    cls = runtime.message_exchanger()
    if getattr(cls, "_sqlmpc_watchdog", False):
        return
    data_received, connection_lost = cls.data_received, cls.connection_lost

    def watched_data_received(self, data):
        global _activity
        data_received(self, data)
        _activity += 1
        if self.peer_pid is not None:
            _last[self.peer_pid] = time.monotonic()

    def watched_connection_lost(self, exc):
        if _guarding and self.peer_pid is not None:
            _lost.setdefault(self.peer_pid, f"connection reset ({exc})" if exc else "closed its MPC connection")
        try:
            connection_lost(self, exc)
        except Exception:   # MPyC re-raises exc inside a loop callback; the guard reports it instead
            pass

    cls.data_received = watched_data_received
    cls.connection_lost = watched_connection_lost
    cls._sqlmpc_watchdog = True


async def guard(coro, peers: dict[int, str], timeout: float, tick: float = 0.2):
    """Await coro; fail with PartyError when a peer (pid -> name) is lost or all peers fall silent."""
    global _guarding
    now = time.monotonic()
    _lost.clear()
    for pid in peers:
        _last[pid] = now
    task = asyncio.ensure_future(coro)
    silent, seen, last_tick = 0.0, _activity, now
    _guarding = True
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=tick)
            if done:
                return task.result()
            now = time.monotonic()
            # Count silence only in live loop time: a tick that took long means the loop was busy.
            step, last_tick = min(now - last_tick, 2 * tick), now
            if _activity != seen:
                seen, silent = _activity, 0.0
            else:
                silent += step
            lost = [pid for pid in peers if pid in _lost]
            culprit = None
            if lost:
                # Most often the consequence of a failure at that peer (or at a third party that
                # stopped it), which the coordinator reports instead when it hears of it in time.
                culprit = errors.PeerLostError(_lost[lost[0]] + " during the query", party=peers[lost[0]])
            elif silent >= timeout:
                # A party waiting on one peer alone knows who stalls; one waiting on several guesses,
                # and only GUESS_DELAY later, so that a party that knows answers (and stops) first.
                awaited = runtime.awaited_peers() & set(peers) if runtime.loaded() else set()
                why = f"no MPC message for {timeout:g} s (stalled or unreachable)"
                if len(awaited) == 1:
                    culprit = errors.PartyError(why, party=peers[next(iter(awaited))])
                elif silent >= timeout + GUESS_DELAY:
                    pid = min(awaited or peers, key=lambda p: _last.get(p, 0.0))
                    culprit = errors.PeerSilentError(why, party=peers[pid])
            if culprit is not None:
                task.cancel()
                try:
                    await task
                except BaseException:
                    pass
                raise culprit
    finally:
        _guarding = False
