"""ConnectionPool: a blocking, fair (FIFO) pool of database connections for threads.

One ``threading.Lock`` guards the idle deque, the counts and the queue of waiters. Each waiter
has its own Condition on that lock, so a returned connection is handed straight to the oldest
waiter: nobody barges in front of a thread that has been waiting longer. I/O (connect, query,
close) never happens under the lock.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from threading import get_ident
from time import monotonic
from types import TracebackType
from typing import Any

from . import forking, sched, workers
from .advisor import recommend
from .connection import BROKEN, PooledConnection
from .drivers import IDLE, INERROR, INTRANS, Driver, is_fatal_sqlstate, make_driver
from .errors import PoolClosed, PoolError, PoolTimeout, TenantQuotaExceeded, TooManyWaiters
from .future import FutureWaiter, Notifier
from .pgbouncer import guard_configure, take_flag
from .redact import find_secrets, redact_conninfo, scrub
from .sched import TenantBook
from .stats import Window

logger = logging.getLogger("threadpool_db")

_CHECKS = ("auto", "always", "never")
AUTO_CHECK_IDLE = 0.5  # seconds idle after which check="auto" validates on borrow
LIFETIME_JITTER = 0.05  # each connection lives up to 5% less than max_lifetime
BURST_WINDOW = 10.0  # seconds of recent borrows the burst decision looks at
_ids = itertools.count(1)
_pool_ids = itertools.count(1)


class _Slot:
    """One live connection and what the pool knows of it."""

    __slots__ = (
        "raw", "id", "pid", "created", "expires", "last_used", "settings", "dirty",
        "gen", "handle", "borrowed_at", "owner", "lease", "tenant", "burst",
    )  # fmt: skip

    def __init__(self, raw: Any, pid: int | None, expires: float, settings: tuple[Any, ...], gen: int):
        self.raw = raw
        self.id = next(_ids)
        self.pid = pid
        self.created = self.last_used = monotonic()
        self.expires = expires
        self.settings = settings
        self.dirty = 0  # DIRTY / BROKEN flags from .connection
        self.gen = gen
        self.handle: PooledConnection | None = None
        self.borrowed_at = 0.0
        self.owner = 0  # ident of the borrowing thread
        self.lease: Any = None  # the leak detector's record of this borrow, when it is on
        self.tenant: str | None = None  # the tenant it is lent to (quota accounting)
        self.burst = False  # made above max_size during a burst: short-lived, closed first


class _Waiter:
    """A borrower in the queue, with a Condition of its own (on its own lock, so a woken
    waiter does not have to win the pool lock back). It is notified, with the pool lock held,
    by ``_give_locked`` and ``putconn`` (a connection for it) and by ``close`` (the pool went
    away). Lock order: pool lock, then the waiter's; a waiter never holds its own lock while
    taking the pool lock."""

    __slots__ = ("cond", "slot", "error", "tenant", "priority", "since")

    def __init__(self, tenant: str | None = None, priority: float = 0.0, since: float = 0.0) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.slot: _Slot | None = None
        self.error: PoolError | None = None
        self.tenant = tenant
        self.priority = priority
        self.since = since

    def wake(self, slot: _Slot | None = None, error: PoolError | None = None) -> None:
        with self.cond:
            self.slot = slot
            self.error = error
            self.cond.notify()


def _positive(name: str, value: Any, *, allow_zero: bool = True, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


class ConnectionPool:
    """A pool of ``min_size``..``max_size`` connections shared by threads.

    See the README for every parameter. ``conninfo`` is a libpq string or URI, or a zero-argument
    callable returning one; ``connect`` instead is any zero-argument callable returning a DB-API
    2.0 connection.
    """

    def __init__(
        self,
        conninfo: str | Callable[[], str] | None = None,
        *,
        connect: Callable[[], Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        min_size: int = 4,
        max_size: int | None = None,
        timeout: float = 30.0,
        max_waiting: int = 0,
        max_lifetime: float = 1800.0,
        max_idle: float = 600.0,
        check: str | Callable[[Any], Any] = "auto",
        check_timeout: float = 5.0,
        configure: Callable[[Any], Any] | None = None,
        reset: Callable[[Any], Any] | None = None,
        reconnect_timeout: float = 300.0,
        connect_timeout: float | None = 10.0,
        num_workers: int = 2,
        name: str | None = None,
        open: bool = True,
        leak_threshold: float | None = None,
        capture_stacks: str = "off",
        stack_sample_rate: float = 0.05,
        reclaim_leaked: bool = False,
        reclaim_factor: float = 2.0,
        tenant_limits: dict[str, int] | None = None,
        default_tenant_limit: int | None = None,
        tenant_wait: bool = True,
        priority_aging: float = 1.0,
        burst_size: int | None = None,
        burst_wait_threshold: float = 0.1,
        burst_lifetime: float = 60.0,
        pgbouncer: bool | None = None,
    ) -> None:
        # -- validate everything before any thread or connection exists ----------------------
        if conninfo is None and connect is None:
            raise ValueError("conninfo or connect is required")
        if conninfo is not None and connect is not None:
            raise ValueError("give conninfo or connect, not both")
        if conninfo is not None and not (isinstance(conninfo, str) or callable(conninfo)):
            raise ValueError(f"conninfo must be a str or a callable, got {type(conninfo).__name__}")
        if connect is not None and not callable(connect):
            raise ValueError("connect must be a zero-argument callable")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ValueError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise ValueError(f"min_size must be an int >= 0, got {min_size!r}")
        if max_size is None:
            max_size = max(min_size, 1)
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
        if max_size < min_size:
            raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size})")
        _positive("timeout", timeout)
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 0:
            raise ValueError(f"max_waiting must be an int >= 0, got {max_waiting!r}")
        _positive("max_lifetime", max_lifetime, allow_zero=False)
        _positive("max_idle", max_idle, allow_zero=False)
        _positive("check_timeout", check_timeout, allow_zero=False)
        _positive("reconnect_timeout", reconnect_timeout)
        _positive("connect_timeout", connect_timeout, allow_zero=False, allow_none=True)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}")
        if not callable(check) and check not in _CHECKS:
            raise ValueError(f"check must be one of {', '.join(_CHECKS)} or a callable, got {check!r}")
        for cb_name, cb in (("configure", configure), ("reset", reset)):
            if cb is not None and not callable(cb):
                raise ValueError(f"{cb_name} must be a callable, got {type(cb).__name__}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name must be a str, got {type(name).__name__}")
        _positive("priority_aging", priority_aging, allow_zero=False)
        if burst_size is not None and (isinstance(burst_size, bool) or not isinstance(burst_size, int)
                                       or burst_size < max_size):  # fmt: skip
            raise ValueError(f"burst_size must be an int >= max_size ({max_size}) or None, got {burst_size!r}")
        _positive("burst_wait_threshold", burst_wait_threshold, allow_zero=False)
        _positive("burst_lifetime", burst_lifetime, allow_zero=False)
        self._tenants = TenantBook(tenant_limits, default_tenant_limit)
        self.tenant_wait = bool(tenant_wait)
        self.priority_aging = float(priority_aging)
        self.burst_size = burst_size
        self.burst_wait_threshold = float(burst_wait_threshold)
        self.burst_lifetime = float(burst_lifetime)

        self.name = name or f"pool-{next(_pool_ids)}"
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = float(timeout)
        self.max_waiting = max_waiting
        self.max_lifetime = float(max_lifetime)
        self.max_idle = float(max_idle)
        self.check_timeout = float(check_timeout)
        self.reconnect_timeout = float(reconnect_timeout)
        self.num_workers = num_workers
        self._configure = configure
        self._reset = reset
        self._check: Callable[[Any], Any] | None = check if callable(check) else None
        # Borrow-time validation: after this many seconds idle (-1: always; None: never).
        self._check_after: float | None = {"auto": AUTO_CHECK_IDLE, "always": -1.0, "never": None}.get(
            check if isinstance(check, str) else "always"
        )
        # Behind PgBouncer (transaction mode): no prepared statements, no session SET.
        flagged = False
        if isinstance(conninfo, str):
            conninfo, flagged = take_flag(conninfo)
        self.pgbouncer = bool(pgbouncer) or (flagged and pgbouncer is None)
        if self.pgbouncer:
            kwargs = {**(kwargs or {}), "prepare_threshold": None}
            self._configure = configure = guard_configure(configure)
        self._secrets = find_secrets(conninfo if isinstance(conninfo, str) else None, kwargs)
        self._target = _describe_target(conninfo, kwargs)
        self._driver: Driver = make_driver(conninfo, connect, kwargs, connect_timeout)
        if callable(conninfo):
            self._driver.connect = self._wrap_callable_conninfo(self._driver.connect, conninfo)

        from .leaks import LeakDetector  # the detector is optional; keep its import local

        self._leaks = LeakDetector.create(
            self, leak_threshold, capture_stacks, stack_sample_rate, reclaim_leaked, reclaim_factor
        )
        self._init_state()
        self._opened = False
        self._opened_at = 0.0
        self._closed = False
        self._server_facts: dict[str, int] = {}
        forking.register(self)
        if open:
            self.open()

    def _init_state(self) -> None:
        """Everything that a fork must rebuild: the lock, the queues, the counts, the threads."""
        self._lock = threading.Lock()
        # Notified by _add_slot whenever the pool gains a connection; open(wait=True) waits on it.
        self._filled = threading.Condition(self._lock)
        self._pool: deque[_Slot] = deque()  # idle connections, LIFO: pop() takes the warmest
        self._waiting: deque[_Waiter] = deque()  # borrowers in arrival order
        self._all: dict[int, _Slot] = {}  # every live connection, idle or out
        self._nconns = 0  # live connections (== len(self._all))
        self._growing = 0  # connections being created by the workers right now
        self._gen = getattr(self, "_gen", 0) + 1
        # A plain pool serves strictly FIFO on the fast path; tenants or priorities switch it
        # (for good) to the scheduler in sched.py.
        self._plain = not self._tenants.active
        self._cap = self.max_size  # growth ceiling: max_size, or burst_size while bursting
        self._bursting = False
        self._slow_waits: deque[tuple[float, float]] = deque(maxlen=4096)  # (when, wait) of waits
        self._rate: deque[tuple[float, int]] = deque(maxlen=600)  # (when, borrows), housekeeper
        self._futures: Any = None  # the future-borrow notifier, made on first use
        self._pid = os.getpid()
        self._borrows = self._waits = self._timeouts = self._rejected = 0
        self._created = self._closed_count = self._create_errors = self._discarded_broken = 0
        self._expired = self._idle_closed = self._check_failed = self._reset_failed = 0
        self._last_error: str | None = None
        self._connect_attempts: deque[float] = deque(maxlen=64)
        self._wait_window = Window()
        self._hold_window = Window()
        self._create_window = Window(256)  # seconds each successful connect took
        self._tasks = workers.TaskQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _wrap_callable_conninfo(self, connect: Callable[[], Any], conninfo: Callable[[], str]) -> Callable[[], Any]:
        # A callable conninfo may rotate passwords: learn each one before anything can log it.
        def _connect() -> Any:
            self._secrets |= find_secrets(conninfo(), None)
            return connect()

        return _connect

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start the background threads and fill the pool to ``min_size``.

        With ``wait=True``, block until ``min_size`` connections exist; on failure after
        ``timeout`` seconds the pool is closed and ``PoolTimeout`` names the target and the last
        connection error. Without it, connections are made in the background, retrying with
        backoff until the database answers.
        """
        _positive("timeout", timeout)
        with self._lock:
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} is closed and cannot be reopened")
            start = not self._opened
            self._opened = True
            self._opened_at = self._opened_at or monotonic()
            if start:
                self._fill_locked()
        if start:
            self._start_threads()
            logger.info("pool %r: opened (min_size=%d, max_size=%d, target %s)", self.name,
                        self.min_size, self.max_size, self._target)  # fmt: skip
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Block until the pool holds ``min_size`` connections; close it and raise on timeout."""
        deadline = monotonic() + timeout
        with self._lock:
            # Critical section: _add_slot notifies _filled each time a connection arrives.
            while self._nconns < self.min_size and not self._closed:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                self._filled.wait(remaining)
            ok = self._nconns >= self.min_size
            msg = (
                f"pool {self.name!r}: could not open {self.min_size} connection(s) to {self._target} "
                f"within {timeout:g} s (have {self._nconns}); last error: {self._last_error or 'none'}"
            )
        if not ok:
            self.close()
            raise PoolTimeout(msg)

    def _start_threads(self) -> None:
        self._threads = workers.start(self, self._tasks, self._stop, self.num_workers)
        if self._leaks is not None:
            self._leaks.start()

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: idle connections now, borrowed ones when they come back.

        Waiters get ``PoolClosed``. Background threads are joined for up to ``timeout`` s.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = list(self._pool)
            self._pool.clear()
            for slot in idle:
                self._forget_locked(slot)
            self._closed_count += len(idle)
            waiters = list(self._waiting)
            self._waiting.clear()
            for w in waiters:
                w.wake(error=PoolClosed(f"pool {self.name!r} was closed while waiting"))
            self._filled.notify_all()
            out = self._nconns
        self._stop.set()
        self._tasks.shutdown(len(self._threads))
        for slot in idle:
            self._close_raw(slot)
        if self._leaks is not None:
            self._leaks.stop()
        if self._futures is not None:
            self._futures.stop()  # after the PoolClosed resolutions queued above
        me = threading.current_thread()
        deadline = monotonic() + timeout
        for t in self._threads:
            if t is not me:
                t.join(max(0.0, deadline - monotonic()))
        logger.info("pool %r: closed (%d idle closed, %d still borrowed)", self.name, len(idle), out)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> ConnectionPool:
        if not self._opened:
            self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Threads hold only weak references; make them exit promptly when we are collected.
        try:
            self._stop.set()
            self._tasks.shutdown(len(self._threads))
        except Exception:
            pass

    # -- borrowing ----------------------------------------------------------------------------
    def connection(
        self, timeout: float | None = None, *, tenant: str | None = None, priority: float | None = None
    ) -> PooledConnection:
        """Borrow a connection for a ``with`` block: commit on success, roll back on error,
        and give it back in both cases."""
        return self.getconn(timeout, tenant=tenant, priority=priority)

    def getconn(
        self, timeout: float | None = None, *, tenant: str | None = None, priority: float | None = None
    ) -> PooledConnection:
        """Borrow a connection; wait up to ``timeout`` s (default: the pool's) in FIFO order
        (by priority first, when priorities are used). ``tenant`` counts against its quota."""
        t0 = monotonic()
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        deadline = None
        while True:
            with self._lock:
                # Fast path: an idle connection and nobody queued before us.
                if self._plain and self._pool and not self._waiting and not self._closed \
                        and tenant is None and priority is None:  # fmt: skip
                    slot = self._pool.pop()
                    self._borrows += 1
                else:
                    slot = None
            if slot is None:
                if deadline is None:
                    timeout = self.timeout if timeout is None else timeout
                    deadline = t0 + timeout
                slot = self._wait_for_slot(deadline, timeout, tenant, priority)  # type: ignore[arg-type]
                now = monotonic()
                if self.burst_size is not None and now - t0 > 0.0005:
                    self._slow_waits.append((now, now - t0))
            else:
                now = t0 if deadline is None else monotonic()
            after = self._check_after
            if after is not None and now - slot.last_used > after and not self._validate(slot):
                if deadline is None:
                    timeout = self.timeout if timeout is None else timeout
                    deadline = t0 + timeout
                continue  # discarded; try again within the same deadline
            self._wait_window.append(now - t0)
            slot.borrowed_at = now
            slot.owner = get_ident()
            slot.handle = handle = PooledConnection(self, slot)
            if self._leaks is not None:
                self._leaks.on_borrow(slot)
            return handle

    def _wait_for_slot(
        self, deadline: float, timeout: float, tenant: str | None = None, priority: float | None = None
    ) -> _Slot:
        with self._lock:
            got = self._admit_locked(tenant, priority, lambda: _Waiter(tenant, float(priority or 0.0), monotonic()))
        if isinstance(got, _Slot):
            return got
        w = got
        with w.cond:
            while w.slot is None and w.error is None:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                w.cond.wait(remaining)
        if w.slot is None and w.error is None:
            with self._lock:
                # Critical section: give up, unless a connection was handed over while the
                # wait was timing out (it was assigned under this lock, so we see it here).
                if w.slot is None and w.error is None:
                    self._waiting.remove(w)
                    self._timeouts += 1
                    self._tenants.count(tenant, "timeouts")
                    raise PoolTimeout(self._timeout_message_locked(timeout))
        if w.error is not None:
            raise w.error
        return w.slot  # type: ignore[return-value]  # counted in _borrows by whoever granted it

    def _admit_locked(self, tenant: str | None, priority: float | None, make_waiter: Callable[[], Any]) -> Any:
        """Critical section: decide here if there's a connection ready (return the slot) or
        if the client needs to wait (queue ``make_waiter()`` and return it). A waiter is only
        ever removed from _waiting under this lock, so a connection is never handed to a
        waiter that has given up. Shared by getconn and getconn_future."""
        if tenant is not None and not isinstance(tenant, str):
            raise ValueError(f"tenant must be a str or None, got {type(tenant).__name__}")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, (int, float))):
            raise ValueError(f"priority must be a number or None, got {type(priority).__name__}")
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed")
        if tenant is not None or priority is not None:
            self._plain = False
        if self._plain:
            if self._pool and not self._waiting:
                self._borrows += 1
                return self._pool.pop()
        elif self._tenants.under_quota(tenant):
            # While a connection is idle no queued waiter is eligible (see sched.py), so one
            # under its quota may take it.
            if self._pool:
                slot = self._pool.pop()
                self._grant_locked(slot, tenant)
                return slot
        elif not self.tenant_wait:
            self._rejected += 1
            self._tenants.count(tenant, "rejected")
            raise TenantQuotaExceeded(
                f"pool {self.name!r}: tenant {tenant!r} already holds its quota of "
                f"{self._tenants.limit(tenant)} connection(s)"  # type: ignore[arg-type]
            )
        if self.max_waiting and len(self._waiting) >= self.max_waiting:
            self._rejected += 1
            self._tenants.count(tenant, "rejected")
            raise TooManyWaiters(
                f"pool {self.name!r}: {len(self._waiting)} borrowers already waiting "
                f"(max_waiting={self.max_waiting})"
            )
        w = make_waiter()
        self._waiting.append(w)
        self._waits += 1
        self._tenants.count(tenant, "waits")
        self._grow_locked()
        return w

    def getconn_future(
        self, timeout: float | None = None, *, tenant: str | None = None, priority: float | None = None
    ) -> Future[PooledConnection]:
        """Borrow through a ``concurrent.futures.Future``, in the same fair queue as getconn.

        The future resolves to a connection (give it back with ``putconn``), or fails with
        ``PoolTimeout``/``PoolClosed``. Cancelling it gives its place (or its connection)
        back. ``asyncio.wrap_future(pool.getconn_future())`` bridges it to asyncio.
        """
        t0 = monotonic()
        if timeout is None:
            timeout = self.timeout
        elif not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        fut: Future[PooledConnection] = Future()
        with self._lock:
            if self._futures is None and not self._closed:
                self._futures = Notifier(self)
            notifier = self._futures
            got = self._admit_locked(
                tenant, priority,
                lambda: FutureWaiter(fut, t0 + timeout, timeout, tenant, float(priority or 0.0), notifier.queue),
            )  # fmt: skip
        if isinstance(got, _Slot):
            if self._check_after is not None and t0 - got.last_used > self._check_after and not self._validate(got):
                return self.getconn_future(max(0.0, timeout - (monotonic() - t0)), tenant=tenant, priority=priority)
            fut.set_running_or_notify_cancel()
            fut.set_result(self._hand_out(got, t0, monotonic(), threading.current_thread()))
            return fut
        notifier.watch(got)
        fut.add_done_callback(lambda f: self._cancel_waiter(got) if f.cancelled() else None)
        return fut

    def _hand_out(self, slot: _Slot, t0: float, now: float, thread: threading.Thread) -> PooledConnection:
        """The end of a borrow: stats, ownership, the handle, the leak lease. (getconn does
        the same steps inline: it is the hot path.)"""
        self._wait_window.append(now - t0)
        slot.borrowed_at = now
        slot.owner = thread.ident or 0
        slot.handle = handle = PooledConnection(self, slot)
        if self._leaks is not None:
            self._leaks.on_borrow(slot, thread)
        return handle

    def _cancel_waiter(self, w: Any) -> None:
        with self._lock:
            if w.slot is None and w in self._waiting:
                self._waiting.remove(w)

    def _expire_waiter(self, w: Any) -> str | None:
        """A future waiter's deadline passed: take it out and say why, unless it was served."""
        with self._lock:
            if w.slot is not None or w.error is not None or w not in self._waiting:
                return None
            self._waiting.remove(w)
            self._timeouts += 1
            self._tenants.count(w.tenant, "timeouts")
            return self._timeout_message_locked(w.timeout)

    def _timeout_message_locked(self, timeout: float) -> str:
        idle = len(self._pool)
        msg = (
            f"pool {self.name!r}: no connection available within {timeout:g} s "
            f"(size={self._nconns}, in_use={self._nconns - idle}, idle={idle}, "
            f"waiting={len(self._waiting)}, max_size={self.max_size}); "
            f"last connection error: {self._last_error or 'none'}"
        )
        if self._leaks is not None:
            msg += self._leaks.holders_summary_locked()
        return msg

    def _validate(self, slot: _Slot) -> bool:
        """Check a connection at borrow time; on failure discard it (and grow if needed)."""
        try:
            if self._check is not None:
                self._run_check(slot)
            else:
                self._driver.validate(slot.raw, self.check_timeout)
            return True
        except Exception as e:
            logger.info("pool %r: connection %d failed validation, discarded: %s",
                        self.name, slot.id, self._scrub(str(e)))  # fmt: skip
            with self._lock:
                self._check_failed += 1
                self._discarded_broken += 1
                self._discard_locked(slot)
            self._close_raw(slot)
            return False

    def _run_check(self, slot: _Slot) -> None:
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

    # -- returning ----------------------------------------------------------------------------
    def putconn(self, conn: PooledConnection) -> None:
        """Give a connection back. Any open transaction is rolled back, settings restored.

        After ``close()`` the connection is closed instead, and ``PoolClosed`` says so.
        """
        if type(conn) is not PooledConnection or conn._pool is not self or conn._raw is None:
            self._check_handle(conn)  # raises the error that says what is wrong
        slot: _Slot = conn._slot  # type: ignore[assignment]
        raw = slot.raw
        now = monotonic()
        self._hold_window.append(now - slot.borrowed_at)
        # Why it cannot be reused: None (it can), "broken" or "reset_failed". The common case,
        # an idle connection with nothing to restore, costs one read of the libpq status.
        if not slot.dirty and self._reset is None and self._driver.status(raw) == IDLE:
            unfit = None
        else:
            unfit = self._reset_for_reuse(slot, raw)
        close = unfit is not None
        expired = not close and now >= slot.expires
        with self._lock:
            # Critical section: the handle is retired and the connection goes to the oldest
            # waiter, or to the idle deque, or away. The check on slot.handle makes a
            # concurrent second putconn of the same handle fail here rather than return twice.
            if slot.handle is not conn:
                raise self._dead_handle_error(conn, "putconn: ")
            slot.handle = None
            conn._raw = conn._slot = None
            if slot.tenant is not None:
                self._tenants.release(slot.tenant)
                slot.tenant = None
            lease = slot.lease
            if lease is not None:
                slot.lease = None
            if slot.gen != self._gen:  # borrowed before a fork: never ours to close
                return
            pool_open = not self._closed
            if not pool_open:
                close = True
                self._closed_count += 1
                self._forget_locked(slot)
            elif close or expired:
                close = True
                if expired:
                    self._expired += 1
                elif unfit == "reset_failed":
                    self._reset_failed += 1
                else:
                    self._discarded_broken += 1
                self._discard_locked(slot)
            else:
                slot.last_used = now
                # Hand it to the oldest waiter (notified on its own Condition), or make it idle.
                if self._waiting or not self._plain:
                    self._give_locked(slot)
                else:
                    self._pool.append(slot)
        if lease is not None:
            self._leaks.on_return(lease, now)  # type: ignore[union-attr]
        if close:
            self._close_raw(slot)
        if not pool_open:
            raise PoolClosed(f"pool {self.name!r} is closed: the connection was closed, not returned")

    def _check_handle(self, conn: Any) -> None:
        if type(conn) is not PooledConnection or conn._pool is not self:
            owner = getattr(conn, "_pool", None)
            where = f"pool {owner.name!r}" if isinstance(owner, ConnectionPool) else "outside any pool"
            raise PoolError(
                f"putconn: this connection does not belong to pool {self.name!r} (it comes from {where})"
            )
        if conn._raw is None:
            raise self._dead_handle_error(conn, "putconn: ")

    def _dead_handle_error(self, conn: PooledConnection, prefix: str = "") -> PoolError:
        gone = conn._slot
        if isinstance(gone, PoolError):
            return type(gone)(prefix + str(gone))
        return PoolError(f"{prefix}connection was already returned to pool {self.name!r}; "
                         "it cannot be used or returned again")  # fmt: skip

    def _release(self, conn: PooledConnection, exc: BaseException | None, commit: bool) -> None:
        """End of a ``with`` block: commit on success; on a fatal error mark the connection
        so putconn discards it; then give it back."""
        try:
            if commit and self._driver.status(conn._raw) != IDLE:
                conn._raw.commit()
        finally:
            if exc is not None and is_fatal_sqlstate(exc):
                conn._slot.dirty |= BROKEN  # type: ignore[union-attr]
            try:
                self.putconn(conn)
            except PoolClosed:
                pass  # closed, not returned: a with block may outlive its pool, quietly

    def _reset_for_reuse(self, slot: _Slot, raw: Any) -> str | None:
        """Make a returned connection fit for the next borrower, or say why it must go."""
        driver = self._driver
        if slot.dirty & BROKEN:
            return "broken"
        try:
            status = driver.status(raw)
            if status == INTRANS or status == INERROR:
                driver.rollback(raw)
            elif status != IDLE:  # ACTIVE (a query in flight) or UNKNOWN (broken, closed)
                return "broken"
            if slot.dirty:
                driver.restore(raw, slot.settings)
                slot.dirty = 0
            if self._reset is not None:
                self._reset(raw)
                if driver.knows_status and driver.status(raw) != IDLE:
                    raise PoolError("reset callback left the connection in a transaction")
            return None
        except Exception as e:
            logger.warning("pool %r: connection %d could not be reset, discarded: %s",
                           self.name, slot.id, self._scrub(str(e)))  # fmt: skip
            return "reset_failed"

    # -- bookkeeping under the lock -----------------------------------------------------------
    def _give_locked(self, slot: _Slot) -> None:
        """Hand ``slot`` to the next waiter (the oldest; or by priority and quota once the
        scheduler is on), or make it idle. Call with the lock held."""
        if self._plain:
            if self._waiting:
                self._borrows += 1  # a grant is never taken back: count the borrow now
                self._waiting.popleft().wake(slot)
            else:
                self._pool.append(slot)
            return
        self._pool.append(slot)
        self._dispatch_locked()

    def _dispatch_locked(self) -> None:
        """Scheduler mode: serve eligible waiters while connections are idle."""
        while self._pool and self._waiting:
            w = sched.pick(self._waiting, self._tenants, monotonic(), self.priority_aging)
            if w is None:
                return
            slot = self._pool.pop()
            self._grant_locked(slot, w.tenant)
            w.wake(slot)

    def _grant_locked(self, slot: _Slot, tenant: str | None) -> None:
        self._borrows += 1
        if tenant is not None:
            self._tenants.take(tenant)
            slot.tenant = tenant

    def _forget_locked(self, slot: _Slot) -> None:
        if self._all.pop(slot.id, None) is not None:
            self._nconns -= 1
        if slot.tenant is not None:  # a lent connection went away: its quota frees up
            self._tenants.release(slot.tenant)
            slot.tenant = None
            self._dispatch_locked()

    def _discard_locked(self, slot: _Slot) -> None:
        """A connection leaves the pool for good; replace it if somebody needs one."""
        self._forget_locked(slot)
        self._closed_count += 1
        self._grow_locked()
        self._fill_locked()

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
        """Ask the workers for connections up to min_size."""
        n = self.min_size - self._nconns - self._growing
        if n > 0 and self._opened and not self._closed:
            self._growing += n
            for _ in range(n):
                self._tasks.put(workers.CREATE)

    # -- work done by the background threads ---------------------------------------------------
    def _new_slot(self) -> _Slot:
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
        slot = _Slot(raw, self._driver.backend_pid(raw), 0.0, settings, self._gen)
        slot.expires = slot.created + self.max_lifetime * jitter
        return slot

    def _create_one(self) -> None:
        """Make one connection for the pool, retrying with backoff while it is still needed."""
        start = monotonic()
        delay = workers.BACKOFF_START
        gen = self._gen
        while True:
            attempt = monotonic()
            with self._lock:
                self._connect_attempts.append(attempt)
            try:
                slot = self._new_slot()
                self._create_window.append(monotonic() - attempt)
            except Exception as e:
                msg = self._scrub(f"{type(e).__name__}: {e}".strip())
                with self._lock:
                    self._create_errors += 1
                    self._last_error = msg
                    needed = bool(self._waiting) or self._nconns + self._growing <= self.min_size
                    elapsed = monotonic() - start
                    give_up = self._closed or gen != self._gen or not needed or elapsed >= self.reconnect_timeout
                    if give_up and gen == self._gen:
                        self._growing -= 1
                if give_up:
                    if not self._closed and needed:
                        logger.error("pool %r: giving up connecting to %s after %.1f s: %s",
                                     self.name, self._target, elapsed, msg)  # fmt: skip
                    return
                logger.warning("pool %r: connection to %s failed, retrying in %.2f s: %s",
                               self.name, self._target, delay, msg)  # fmt: skip
                if self._stop.wait(delay * (0.75 + 0.5 * random.random())):
                    with self._lock:
                        if gen == self._gen:
                            self._growing -= 1
                    return
                delay = min(delay * 2.0, workers.BACKOFF_MAX)
                continue
            self._add_slot(slot, gen)
            return

    def _add_slot(self, slot: _Slot, gen: int) -> None:
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
                self._last_error = None
                self._give_locked(slot)
                self._filled.notify_all()
        if not keep:
            self._close_raw(slot)

    def _housekeep(self) -> float:
        """Close expired and surplus idle connections, refill to min_size. Returns the delay
        until it should run again."""
        now = monotonic()
        victims: list[_Slot] = []
        with self._lock:
            if self._closed:
                return 1.0
            self._rate.append((now, self._borrows))
            decay = self.burst_size is not None and self._update_burst_locked(now)
            # Oldest-used first: the idle deque is LIFO, so its left end rested longest.
            surplus = self._nconns - self.min_size
            kept: deque[_Slot] = deque()
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

    def _update_burst_locked(self, now: float) -> bool:
        """Decide whether to burst above max_size: on when the p99 borrow wait over the last
        BURST_WINDOW seconds passes burst_wait_threshold, off again below half of it
        (hysteresis, so it does not flap). Returns True when a burst connection may be closed
        (gradual decay: at most one per housekeeping tick)."""
        since = now - BURST_WINDOW
        while self._slow_waits and self._slow_waits[0][0] < since:
            self._slow_waits.popleft()
        start = next((n for t, n in self._rate if t >= since), self._borrows)
        total = max(self._borrows - start, len(self._slow_waits))
        # finished waits, and those still waiting (a queue that never drains must count too)
        waits = sorted([w for _, w in self._slow_waits] + [now - w.since for w in self._waiting], reverse=True)
        k = max(1, total // 100)  # the p99: 1% of the window's borrows waited at least this
        p99 = waits[k - 1] if len(waits) >= k else 0.0
        if not self._bursting and p99 > self.burst_wait_threshold:
            self._bursting, self._cap = True, self.burst_size  # type: ignore[assignment]
            logger.info("pool %r: bursting up to %d connections (p99 wait %.0f ms)", self.name, self._cap, p99 * 1e3)
        elif self._bursting and p99 < self.burst_wait_threshold / 2:
            self._bursting, self._cap = False, self.max_size
            logger.info("pool %r: burst over (p99 wait %.0f ms)", self.name, p99 * 1e3)
        return not self._bursting and any(s.burst for s in self._pool)

    def resize(self, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change min_size and/or max_size at runtime. Growing takes effect at once; surplus
        idle connections close now, surplus borrowed ones when they come back."""
        lo = self.min_size if min_size is None else min_size
        hi = self.max_size if max_size is None else max_size
        for name, v in (("min_size", lo), ("max_size", hi)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "min_size" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'min_size' else 1}, got {v!r}")
        if hi < lo:
            raise ValueError(f"max_size ({hi}) must be >= min_size ({lo})")
        if self.burst_size is not None and self.burst_size < hi:
            raise ValueError(f"max_size ({hi}) must be <= burst_size ({self.burst_size})")
        victims: list[_Slot] = []
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
                    slot.expires = 0.0
                    excess -= 1
            self._fill_locked()
            self._grow_locked()
        for slot in victims:
            self._close_raw(slot)
        logger.info("pool %r: resized to min_size=%d, max_size=%d", self.name, lo, hi)

    def _close_raw(self, slot: _Slot) -> None:
        self._close_quietly(slot.raw)

    def _close_quietly(self, raw: Any) -> None:
        try:
            self._driver.close(raw)
        except Exception as e:
            logger.debug("pool %r: error closing a connection: %s", self.name, self._scrub(str(e)))

    # -- fork ---------------------------------------------------------------------------------
    def _after_fork_child(self) -> None:
        """In a forked child: forget the parent's connections without touching their sockets,
        retire the handles borrowed before the fork, and start again."""
        inherited = list(self._all.values())
        for slot in inherited:
            h = slot.handle
            if h is not None:
                h._raw = None
                h._slot = PoolError(
                    f"connection was borrowed from pool {self.name!r} before os.fork(); it belongs to the parent"
                )
        forking.abandon(self._driver, [s.raw for s in inherited])
        self._init_state()
        if self._leaks is not None:
            self._leaks.after_fork()
        if self._opened and not self._closed:
            with self._lock:
                self._fill_locked()
            self._start_threads()

    # -- introspection ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A flat dict of counts, counters and recent wait/hold percentiles (ms)."""
        with self._lock:
            idle = len(self._pool)
            d: dict[str, Any] = {
                "name": self.name,
                "size": self._nconns,
                "idle": idle,
                "in_use": self._nconns - idle,
                "waiting": len(self._waiting),
                "growing": self._growing,
                "min_size": self.min_size,
                "max_size": self.max_size,
                "borrows": self._borrows,
                "waits": self._waits,
                "timeouts": self._timeouts,
                "rejected": self._rejected,
                "created": self._created,
                "closed": self._closed_count,
                "create_errors": self._create_errors,
                "discarded_broken": self._discarded_broken,
                "check_failed": self._check_failed,
                "reset_failed": self._reset_failed,
                "expired": self._expired,
                "idle_closed": self._idle_closed,
                "last_error": self._last_error,
                "pool_closed": self._closed,
            }
            if self._leaks is not None:
                d.update(self._leaks.stats_locked())
            if self.burst_size is not None:
                d["burst_size"], d["bursting"] = self.burst_size, self._bursting
            if not self._plain:
                d["tenants"] = self._tenants.stats()
        d["wait_p50_ms"], d["wait_p99_ms"] = self._wait_window.percentiles_ms(50, 99)
        d["wait_max_ms"] = self._wait_window.max_ms()
        d["hold_p50_ms"], d["hold_p99_ms"] = self._hold_window.percentiles_ms(50, 99)
        d["hold_max_ms"] = self._hold_window.max_ms()
        return d

    def advise(
        self, workers: int = 1, server_cores: int | None = None, spindles: int = 1, query_server: bool = True
    ) -> dict[str, Any]:
        """A recommended max_size with its reasoning, from what this pool measured (see
        advisor.py). ``workers``: processes that each run such a pool against the same server.
        With ``query_server`` it asks the server for max_connections and reserved slots; the
        server's cores are taken from this machine when the server is on loopback."""
        now = monotonic()
        with self._lock:
            samples = [(t, n) for t, n in self._rate if t >= now - 60.0]
            borrows = self._borrows
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            rate = (borrows - samples[0][1]) / (now - samples[0][0])
        else:
            rate = borrows / max(now - self._opened_at, 1e-3) if self._opened_at else 0.0
        facts = dict(self._server_facts)
        if query_server and self._driver.name == "psycopg" and not self._closed:
            try:
                with self.connection(timeout=2.0) as conn:
                    facts["max_connections"] = int(conn.execute("SHOW max_connections").fetchone()[0])
                    rows = conn.execute(
                        "SELECT coalesce(sum(setting::int), 0) FROM pg_settings "
                        "WHERE name IN ('superuser_reserved_connections', 'reserved_connections')"
                    ).fetchone()
                    facts["reserved"] = int(rows[0])
                self._server_facts = facts
            except Exception as e:
                logger.info("pool %r: advise could not ask the server: %s", self.name, self._scrub(str(e)))
        if server_cores is None and self._target.split(":")[0] in ("127.0.0.1", "localhost", "::1"):
            server_cores = os.cpu_count()
        advice = recommend(
            arrival_rate=rate, mean_hold_s=self._hold_window.mean(), current_max_size=self.max_size,
            workers=workers, wait_p99_ms=self._wait_window.percentiles_ms(99)[0], server_cores=server_cores,
            spindles=spindles, max_connections=facts.get("max_connections"), reserved=facts.get("reserved", 0),
        )  # fmt: skip
        return advice.as_dict()

    def connect_attempts(self) -> list[float]:
        """Monotonic timestamps of the recent connection attempts (to see the backoff)."""
        with self._lock:
            return list(self._connect_attempts)

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def __repr__(self) -> str:
        idle = len(self._pool)
        return (
            f"<ConnectionPool {self.name!r} {self._target} size={self._nconns} idle={idle} "
            f"in_use={self._nconns - idle} waiting={len(self._waiting)} closed={self._closed}>"
        )

    # -- leak diagnostics (delegated; empty when detection is off) -----------------------------
    def leaks(self) -> list[dict[str, Any]]:
        """Current leak suspects (see the README); empty when leak detection is off."""
        return self._leaks.leaks() if self._leaks is not None else []

    def leak_reports(self) -> list[dict[str, Any]]:
        """The last 100 leak reports, including leaks since returned; oldest first."""
        return self._leaks.reports() if self._leaks is not None else []

    def borrowed(self) -> list[dict[str, Any]]:
        """One record per connection out now: thread, held for, borrow site, holder stack."""
        from .leaks import describe_borrowed

        return describe_borrowed(self)


def _describe_target(conninfo: Any, kwargs: dict[str, Any] | None) -> str:
    """host:port/dbname for messages, never the password."""
    if callable(conninfo) or conninfo is None:
        return "(callable conninfo)" if callable(conninfo) else "(connect factory)"
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(conninfo, **(kwargs or {}))
        host = d.get("host") or d.get("hostaddr") or "localhost"
        return f"{host}:{d.get('port') or 5432}/{d.get('dbname') or d.get('user') or ''}"
    except Exception:
        return redact_conninfo(str(conninfo))

