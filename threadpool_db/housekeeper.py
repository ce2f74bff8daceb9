"""The housekeeper: which idle connections retire (lifetime, idle limit, burst decay), and
whether the pool may burst above max_size.

It decides from a snapshot the pool hands it (:class:`Sweepable`) and asks the pool to evict
its choices; the pool evicts, under its own lock, only the ones still idle by then. Its own
state (the burst flag and the recent waits it decides from) is guarded by its own lock; the
samples deque is appended to by borrowers without a lock (one deque append is atomic).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from .records import Slot

BURST_WINDOW = 10.0  # seconds of recent borrows the burst decision looks at
BUSY_TICK = 1.0  # the rhythm while borrowers come (rate samples for the advisor, burst decisions)
QUIET_TICK = 60.0  # the longest sleep of a quiet pool: one advisor window (its samples span a minute)
MIN_TICK = 0.05

logger = logging.getLogger("threadpool_db")


@dataclass(frozen=True)
class View:
    """What the pool shows the housekeeper, taken under its lock in one go."""

    now: float
    idle: list[Slot]  # oldest-used first
    size: int
    keep: int  # connections to keep however idle (min_size; 0 in a forked parent)
    borrows: int  # borrow attempts since open
    borrows_at_window_start: int  # the same count BURST_WINDOW seconds ago (the pool's history)
    waiting_since: list[float]  # when each queued borrower started waiting
    next_expiry: float  # the soonest lifetime end still ahead, idle or out (one out may come back)
    quiet: bool = False  # no borrow attempt since the last round, nobody waiting, nothing to refill


class Sweepable(Protocol):
    """The three things the housekeeper may ask of its pool."""

    name: str

    def _begin_round(self) -> View: ...

    def _evict(self, victims: list[tuple[Slot, str]]) -> None: ...

    def _set_ceiling(self, cap: int) -> None: ...


class Housekeeper:
    def __init__(self, max_idle: float, max_size: int, burst_size: int | None, burst_wait_threshold: float) -> None:
        self.max_idle = max_idle
        self.max_size = max_size  # guarded by _lock: the pool's resize() sets it (set_max_size)
        self.burst_size = burst_size
        self.burst_wait_threshold = burst_wait_threshold
        self._lock = threading.Lock()  # guards bursting and max_size
        self.bursting = False
        # (when, seconds waited) of borrows that waited; appended by borrowers, lock-free
        self.slow_waits: deque[tuple[float, float]] = deque(maxlen=4096)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held the parent's)."""
        self._lock = threading.Lock()

    def tick(self, pool: Sweepable) -> float:
        """One round: decide, ask the pool to evict, return the seconds until the next one."""
        v = pool._begin_round()
        decay = False
        if self.burst_size is not None:
            decay = self._decide_burst(pool, v)
        victims: list[tuple[Slot, str]] = []
        surplus = v.size - v.keep
        for slot in v.idle:
            if decay and slot.burst:  # demand fell: one burst connection per tick goes
                victims.append((slot, "idle"))
                surplus -= 1
                decay = False
            elif v.now >= slot.expires:
                victims.append((slot, "expired"))
            elif surplus > 0 and v.now - slot.last_used >= self.max_idle:
                victims.append((slot, "idle"))
                surplus -= 1
        pool._evict(victims)
        # Sleep until the next deadline: a lifetime end, or an idle limit above min_size (a
        # connection that comes to rest later reaches its limit after now + max_idle, so that
        # bounds the wait for those too). While borrowers come, or a burst may start or decay,
        # keep the one-second rhythm. What else changes the deadlines wakes the thread early
        # (the pool's _nudge: a new connection, a resize, a queued borrower, close).
        nxt = v.next_expiry
        if v.size > v.keep:
            nxt = min(nxt, min((s.last_used for s in v.idle), default=v.now) + self.max_idle)
        quiet = v.quiet and not (self.burst_size is not None and (self.bursting or any(s.burst for s in v.idle)))
        return min(max(nxt - v.now, MIN_TICK), QUIET_TICK if quiet else BUSY_TICK)

    def _decide_burst(self, pool: Sweepable, v: View) -> bool:
        """Burst above max_size when the recent p99 borrow wait passes burst_wait_threshold,
        stop below half of it (hysteresis, so it does not flap). Returns True when a burst
        connection may be closed (gradual decay: at most one per tick)."""
        p99 = self._recent_wait_p99(v)
        with self._lock:
            if not self.bursting and p99 > self.burst_wait_threshold:
                self.bursting, cap = True, self.burst_size
                logger.info("pool %r: bursting up to %d connections (p99 wait %.0f ms)", pool.name, cap, p99 * 1e3)
            elif self.bursting and p99 < self.burst_wait_threshold / 2:
                self.bursting, cap = False, self.max_size
                logger.info("pool %r: burst over (p99 wait %.0f ms)", pool.name, p99 * 1e3)
            else:
                cap = None
            bursting = self.bursting
        if cap is not None:
            pool._set_ceiling(cap)  # type: ignore[arg-type]
        return not bursting and any(s.burst for s in v.idle)

    def set_max_size(self, max_size: int) -> None:
        with self._lock:
            self.max_size = max_size

    def ceiling(self) -> int:
        with self._lock:
            return self.burst_size if self.bursting and self.burst_size is not None else self.max_size

    def _recent_wait_p99(self, v: View) -> float:
        """The p99 borrow wait over the last BURST_WINDOW seconds, queued borrowers counted
        (a queue that never drains must show). Works on snapshots: borrowers append to
        slow_waits without a lock (list() of a deque is taken in one step under the GIL)."""
        since = v.now - BURST_WINDOW
        samples = list(self.slow_waits)
        finished = [w for t, w in samples if t >= since]
        waiting = [v.now - t for t in v.waiting_since]
        total = max(v.borrows - v.borrows_at_window_start, len(finished))
        waits = sorted(finished + waiting, reverse=True)
        k = max(1, total // 100)  # the p99: 1% of the window's borrows waited at least this
        return waits[k - 1] if len(waits) >= k else 0.0
