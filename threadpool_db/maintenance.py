"""Connection lifecycle work, mixed into ConnectionPool: making connections (with backoff),
validating them at borrow time, retiring them (lifetime, idle, burst decay), and resizing.
Everything here runs on the pool's state under its lock, or does I/O with no lock held."""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from time import monotonic
from typing import Any

from . import sched, workers
from .base import BURST_WINDOW, LIFETIME_JITTER, Slot, check_sizes
from .drivers import IDLE, permanent_cause
from .errors import PoolError

logger = logging.getLogger("threadpool_db")


class Maintenance:
    """Mixin: the connection lifecycle. Uses ConnectionPool's state (see pool.py)."""

    _lock: Any
    _pool: deque[Slot]
    _waiting: deque[Any]
    _all: dict[int, Slot]

    def _validate(self, slot: Slot) -> bool:
        """Check a connection at borrow time; on failure discard it (and grow if needed).

        A connection that fails its check before it was ever used says more about the check
        (or the server) than about the connection: such failures in a row push the pool-wide
        backoff like failed connects do, so a check that always fails cannot make the pool
        open connections as fast as the server accepts them."""
        fresh = slot.last_used == slot.created
        try:
            if self._check is not None:
                self._run_check(slot)
            else:
                self._driver.validate(slot.raw, self.check_timeout)
            if fresh and self._check_streak:
                with self._lock:
                    self._check_streak = 0
            return True
        except Exception as e:
            logger.info("pool %r: connection %d failed validation, discarded: %s",
                        self.name, slot.id, self._scrub(str(e)))  # fmt: skip
            with self._lock:
                self._check_failed += 1
                self._discarded_broken += 1
                if fresh:
                    self._check_streak += 1
                    self._push_retry_locked(self._check_streak, workers.BACKOFF_MAX)
                self._discard_locked(slot)
            self._close_raw(slot)
            return False

    def _push_retry_locked(self, streak: int, cap: float) -> float:
        """Move the pool-wide time of the next connect attempt: exponential in ``streak``,
        capped, with jitter. Returns the delay."""
        delay = min(workers.BACKOFF_START * 2.0 ** (streak - 1), cap) * (0.75 + 0.5 * random.random())
        self._retry_at = max(self._retry_at, monotonic() + delay)
        return delay

    def _run_check(self, slot: Slot) -> None:
        """Run the user's check in a daemon helper thread, so a check that hangs is bounded by
        check_timeout (and cannot hold up interpreter exit); on timeout the connection is
        aborted, which also frees a check stuck on the network. It costs a thread start."""
        result: list[BaseException | None] = []

        def run() -> None:
            try:
                self._check(slot.raw)  # type: ignore[misc]
                result.append(None)
            except BaseException as e:
                result.append(e)

        t = threading.Thread(target=run, name=f"{self.name}-check", daemon=True)
        t.start()
        t.join(self.check_timeout)
        if not result:
            self._driver.abort(slot.raw)
            raise PoolError(f"check callback did not finish within check_timeout={self.check_timeout:g} s")
        if result[0] is not None:
            raise result[0]

    def _grow_locked(self) -> None:
        """Ask the workers for connections the waiters need, within max_size."""
        waiting = len(self._waiting) if self._plain else sched.eligible(self._waiting, self._tenants)
        need = waiting - self._growing
        room = self._cap - self._nconns - self._growing
        n = min(need, room)
        if n > 0 and self._opened and not self._closed:
            self._growing += n
            for _ in range(n):
                self._tasks.put(workers.CREATE)

    def _fill_locked(self) -> None:
        """Ask the workers for connections up to min_size (none in a forked parent)."""
        n = (0 if self._forked_parent else self.min_size) - self._nconns - self._growing
        if n > 0 and self._opened and not self._closed:
            self._growing += n
            for _ in range(n):
                self._tasks.put(workers.CREATE)

    def _new_slot(self) -> Slot:
        """Connect and configure one connection (worker thread, no lock held)."""
        raw = self._driver.connect()
        try:
            if self._configure is not None:
                self._configure(raw)
                if self._driver.knows_status and self._driver.status(raw) != IDLE:
                    raise PoolError("configure callback left the connection in a transaction; "
                                    "commit or roll back inside it")  # fmt: skip
            settings = self._driver.settings(raw)
        except BaseException:
            self._close_quietly(raw)
            raise
        jitter = 1.0 - LIFETIME_JITTER * random.random()
        slot = Slot(raw, self._driver.backend_pid(raw), 0.0, settings, self._gen)
        slot.expires = slot.created + self.max_lifetime * jitter
        return slot

    def _create_one(self) -> None:
        """Make one connection for the pool, retrying with backoff while it is still needed.

        The backoff is pool-wide (_retry_at): every creator waits for the same next-attempt
        time. Errors that retrying cannot fix (see drivers.permanent_cause) back off up to
        BACKOFF_MAX_CONFIG and, while the pool holds no connection, fail the waiters at once
        with PoolConfigError. Each distinct cause is logged once (ERROR when permanent,
        WARNING when not); repeats go to DEBUG; the first success after failures says so."""
        start = monotonic()
        gen = self._gen
        while True:
            pause = self._retry_at - monotonic()  # a float read: no lock needed
            if pause > 0 and self._stop.wait(pause):
                with self._lock:
                    if gen == self._gen:
                        self._growing -= 1
                return
            attempt = monotonic()
            with self._lock:
                self._connect_attempts.append(attempt)
            try:
                slot = self._new_slot()
                self._create_window.append(monotonic() - attempt)
            except Exception as e:
                cause = permanent_cause(e)
                msg = self._scrub(f"{type(e).__name__}: {e}".strip())
                with self._lock:
                    self._create_errors += 1
                    self._connect_sum += monotonic() - attempt
                    self._last_error = msg
                    self._fail_streak += 1
                    delay = self._push_retry_locked(self._fail_streak, workers.BACKOFF_MAX_CONFIG if cause
                                                    else workers.BACKOFF_MAX)  # fmt: skip
                    self._config_error = f"{cause}: {msg}" if cause else None
                    if self._config_failed_locked():
                        # Nothing to wait for: fail the queue now, and any open(wait=True).
                        err = self._config_error_locked()
                        failed, self._waiting = list(self._waiting), deque()
                        self._config_errors += len(failed)
                        for w in failed:
                            w.wake(error=err)
                        self._filled.notify_all()
                    needed = bool(self._waiting) or self._nconns + self._growing <= self.min_size
                    elapsed = monotonic() - start
                    give_up = self._closed or gen != self._gen or not needed or elapsed >= self.reconnect_timeout
                    if give_up and gen == self._gen:
                        self._growing -= 1
                    key = msg if len(self._logged_causes) < 100 else ""
                    first = key not in self._logged_causes
                    self._logged_causes.add(key)
                if first:
                    logger.log(logging.ERROR if cause else logging.WARNING,
                               "pool %r: cannot connect to %s%s: %s (retrying with backoff; logged once per cause)",
                               self.name, self._target, f" ({cause}: fix the configuration)" if cause else "",
                               msg)  # fmt: skip
                else:
                    logger.debug("pool %r: connection to %s failed again, next attempt in %.2f s: %s",
                                 self.name, self._target, delay, msg)  # fmt: skip
                if give_up:
                    if not self._closed and gen == self._gen and needed:
                        logger.error("pool %r: giving up connecting to %s after %.1f s: %s",
                                     self.name, self._target, elapsed, msg)  # fmt: skip
                        self._call_reconnect_failed()
                    return
                continue
            self._add_slot(slot, gen)
            return

    def _call_reconnect_failed(self) -> None:
        cb = self._reconnect_failed
        if cb is not None:
            try:
                cb(self)
            except Exception:
                logger.exception("pool %r: the reconnect_failed callback raised", self.name)

    def _add_slot(self, slot: Slot, gen: int) -> None:
        with self._lock:
            stale = gen != self._gen
            if not stale:
                self._growing -= 1
            if stale or self._closed:
                keep = False
            else:
                keep = True
                if self._nconns >= self.max_size:  # above max_size: a burst connection
                    slot.burst = True
                    slot.expires = min(slot.expires, slot.created + self.burst_lifetime)
                self._all[slot.id] = slot
                self._nconns += 1
                self._created += 1
                self._connect_sum += monotonic() - slot.created
                recovered = self._fail_streak if self._logged_causes else 0
                self._last_error = self._config_error = None
                self._fail_streak = 0
                self._retry_at = 0.0
                self._logged_causes.clear()
                self._give_locked(slot)
                self._filled.notify_all()
        if not keep:
            self._close_raw(slot)
        elif recovered:
            logger.warning("pool %r: connected to %s again after %d failed attempt(s)",
                           self.name, self._target, recovered)  # fmt: skip

    def _housekeep(self) -> float:
        """Close expired and surplus idle connections, refill to min_size. Returns the delay
        until it should run again."""
        now = monotonic()
        victims: list[Slot] = []
        p99 = self._recent_wait_p99(now) if self.burst_size is not None else 0.0
        with self._lock:
            if self._closed:
                return 1.0
            self._housekeeper_runs += 1
            self._rate.append((now, self._borrows))
            decay = self.burst_size is not None and self._update_burst_locked(p99)
            # Oldest-used first: the idle deque is LIFO, so its left end rested longest.
            surplus = self._nconns - (0 if self._forked_parent else self.min_size)
            kept: deque[Slot] = deque()
            for slot in self._pool:
                if decay and slot.burst:  # demand fell: one burst connection per tick goes
                    victims.append(slot)
                    self._idle_closed += 1
                    surplus -= 1
                    decay = False
                elif now >= slot.expires:
                    victims.append(slot)
                    self._expired += 1
                elif surplus > 0 and now - slot.last_used >= self.max_idle:
                    victims.append(slot)
                    self._idle_closed += 1
                    surplus -= 1
                else:
                    kept.append(slot)
            if victims:
                self._pool = kept
                for slot in victims:
                    self._forget_locked(slot)
                self._closed_count += len(victims)
            self._fill_locked()
            self._grow_locked()
            nxt = min((s.expires for s in self._all.values()), default=now + 60.0)
            if self._nconns > self.min_size:
                nxt = min(nxt, min((s.last_used for s in self._pool), default=now) + self.max_idle)
        for slot in victims:
            logger.debug("pool %r: closing connection %d (lifetime or idle limit)", self.name, slot.id)
            self._close_raw(slot)
        return min(max(nxt - now, 0.05), 1.0)

    def _recent_wait_p99(self, now: float) -> float:
        """The p99 borrow wait over the last BURST_WINDOW seconds, computed without the pool
        lock: getconn appends to _slow_waits without it, so work on snapshots (list() of a
        deque is taken in one step under the GIL)."""
        since = now - BURST_WINDOW
        while self._slow_waits and self._slow_waits[0][0] < since:
            self._slow_waits.popleft()
        finished = [w for t, w in list(self._slow_waits) if t >= since]
        waiting = [now - w.since for w in list(self._waiting)]  # a queue that never drains counts too
        start = next((n for t, n in list(self._rate) if t >= since), self._borrows)
        total = max(self._borrows - start, len(finished))
        waits = sorted(finished + waiting, reverse=True)
        k = max(1, total // 100)  # the p99: 1% of the window's borrows waited at least this
        return waits[k - 1] if len(waits) >= k else 0.0

    def _update_burst_locked(self, p99: float) -> bool:
        """Decide whether to burst above max_size: on when the recent p99 borrow wait passes
        burst_wait_threshold, off again below half of it (hysteresis, so it does not flap).
        Returns True when a burst connection may be closed (gradual decay: at most one per
        housekeeping tick)."""
        if not self._bursting and p99 > self.burst_wait_threshold:
            self._bursting, self._cap = True, self.burst_size  # type: ignore[assignment]
            logger.info("pool %r: bursting up to %d connections (p99 wait %.0f ms)", self.name, self._cap, p99 * 1e3)
        elif self._bursting and p99 < self.burst_wait_threshold / 2:
            self._bursting, self._cap = False, self.max_size
            logger.info("pool %r: burst over (p99 wait %.0f ms)", self.name, p99 * 1e3)
        return not self._bursting and any(s.burst for s in self._pool)

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change min_size and max_size at runtime, as psycopg_pool's ``resize``: ``max_size``
        None means ``min_size``. Growing takes effect at once; surplus idle connections close
        now, surplus borrowed ones when they come back."""
        lo, hi = check_sizes(min_size, max_size, null=not self._keep_idle)
        if self.burst_size is not None and self.burst_size < hi:
            raise ValueError(f"max_size ({hi}) must be <= burst_size ({self.burst_size})")
        victims: list[Slot] = []
        with self._lock:
            self.min_size, self.max_size = lo, hi
            self._cap = self.burst_size if self._bursting else hi  # type: ignore[assignment]
            excess = self._nconns - self._cap
            while excess > 0 and self._pool:
                slot = self._pool.popleft()  # the longest idle first
                self._forget_locked(slot)
                self._closed_count += 1
                victims.append(slot)
                excess -= 1
            for slot in self._all.values():  # borrowed surplus: expire, so it closes on return
                if excess <= 0:
                    break
                if slot.handle is not None:
                    slot.expires = 0.0  # read by putconn under the same lock
                    excess -= 1
            self._fill_locked()
            self._grow_locked()
        for slot in victims:
            self._close_raw(slot)
        logger.info("pool %r: resized to min_size=%d, max_size=%d", self.name, lo, hi)

    def check(self) -> None:
        """Validate every idle connection now (psycopg_pool's ``check()``): the ones that
        fail are discarded and replaced, the others go back. Borrowers are not held up: the
        connections under test are out of the idle set meanwhile."""
        with self._lock:
            batch = list(self._pool)
            self._pool.clear()
        for slot in batch:
            if slot.expires <= monotonic():
                with self._lock:
                    self._expired += 1
                    self._discard_locked(slot)
                self._close_raw(slot)
            elif self._validate(slot):
                with self._lock:
                    gone = self._closed
                    if gone:
                        self._forget_locked(slot)
                        self._closed_count += 1
                    else:
                        self._give_locked(slot)
                if gone:
                    self._close_raw(slot)

    def drain(self) -> None:
        """Replace every connection (psycopg_pool's ``drain()``), e.g. after a password or DNS
        change: idle ones close now, borrowed ones when they come back; new ones are opened
        up to min_size."""
        with self._lock:
            idle = list(self._pool)
            self._pool.clear()
            for slot in idle:
                self._forget_locked(slot)
            self._closed_count += len(idle)
            for slot in self._all.values():
                slot.expires = 0.0  # read by putconn under this lock: closes on return
            self._fill_locked()
            self._grow_locked()
        for slot in idle:
            self._close_raw(slot)
        logger.info("pool %r: drained (%d idle closed, the rest close on return)", self.name, len(idle))

    def _close_raw(self, slot: Slot) -> None:
        self._close_quietly(slot.raw)

    def _close_quietly(self, raw: Any) -> None:
        try:
            self._driver.close(raw)
        except Exception as e:
            logger.debug("pool %r: error closing a connection: %s", self.name, self._scrub(str(e)))
