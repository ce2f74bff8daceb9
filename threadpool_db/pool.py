"""ConnectionPool: a blocking, fair (FIFO) pool of database connections for threads.

One ``threading.Lock`` guards the idle deque, the counts and the queue of waiters. Each waiter
has its own condition (a one-shot wake-up lock: records.Waiter), so a returned connection is
handed straight to the oldest waiter: nobody barges in front of a thread that has been waiting
longer. I/O (connect, query, close) never happens under the lock.

This module holds that lock, the idle deque, the waiters, the counters, and the paths that
change them, in the order a borrow takes them: admit, wait, grant, finish, return, undo. The
rest lives with what it is about (the package map is in __init__.py).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from threading import current_thread, get_ident
from types import TracebackType
from typing import Any

from . import advisor, errors, forking, quotas, stats, workers
from .config import AUTO_CHECK_IDLE, NETWORK_TIMEOUT, UNLIMITED, PoolConfig, check_sizes, positive
from .connection import PooledConnection, bad_return_error, check_connection
from .connector import GIVE_UP, RETRY, STOP, CheckTimedOut, Connector, Failure
from .drivers import IDLE, Driver, ValidationTimeout
from .errors import PoolClosed, PoolConfigError, PoolError, PoolTimeout, TenantQuotaExceeded, TooManyWaiters
from .future import Futures
from .housekeeper import BURST_WINDOW, Housekeeper, View
from .leaks import LeakDetector, describe_all, held_text, holders_text
from .quotas import TenantBook
from .records import BROKEN, DIRTY, Queued, Slot, Waiter
from .stats import Window

logger = logging.getLogger("threadpool_db")
_pool_ids = itertools.count(1)
RECHECKERS = 4  # threads testing idle connections in the background after a check timed out
FORK_LOCK_TIMEOUT = 1.0  # seconds os.fork() waits for a pool's lock (see _before_fork)


_new_handle = object.__new__
# The running thread's Thread object by ident: threading's own table (what current_thread()
# reads, without its Python frame), or current_thread() where that table is not there.
_thread_of: Callable[[int], threading.Thread | None] = (
    getattr(threading, "_active", {}).get if hasattr(threading, "_active") else (lambda _ident: current_thread())
)


# What a borrow records when leak detection is off: nothing, through a builtin that returns
# None (a bound dict.clear, of a dict nobody else sees): half the cost of a Python function.
_NO_SIGHT: Callable[[], None] = {}.clear


class ConnectionPool:
    """A pool of ``min_size``..``max_size`` connections shared by threads.

    See docs/api.md for every parameter. ``conninfo`` is a libpq string or URI, or a
    zero-argument callable returning one; ``connect`` instead is any zero-argument callable
    returning a DB-API 2.0 connection.
    """

    _keep_idle = True  # False in NullConnectionPool: a return with nobody waiting closes
    _idle_cap = 0  # with _keep_idle False, how many may rest idle (QueuePool's pool_size)
    _fifo_idle = False  # lend the longest-idle first (SQLAlchemy's default), not the warmest
    _default_name = "pool"  # a pool given no name is "<this>-N", N unique in the process

    def __class_getitem__(cls, item: Any) -> type[ConnectionPool]:
        return cls  # psycopg_pool's is generic: ConnectionPool[Connection[DictRow]] keeps working

    def __init__(
        self,
        conninfo: str | Callable[[], str] = "",
        *,
        # what to connect to (docs/api.md has every parameter)
        connect: Callable[[], Any] | None = None,
        kwargs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        connection_class: type | None = None,
        # how many, and how long a borrower waits
        min_size: int = 4,
        max_size: int | None = None,
        timeout: float = 30.0,
        max_waiting: int = 0,
        # the connections' lives, their checks and callbacks
        max_lifetime: float = 3600.0,
        max_idle: float = 600.0,
        check: str | Callable[[Any], Any] | None = "auto",
        check_timeout: float = 5.0,
        configure: Callable[[Any], Any] | None = None,
        reset: Callable[[Any], Any] | None = None,
        reconnect_timeout: float = 300.0,
        reconnect_failed: Callable[[ConnectionPool], Any] | None = None,
        connect_timeout: float | None = 10.0,
        network_timeout: float | None = NETWORK_TIMEOUT,
        num_workers: int = 3,
        name: str | None = None,
        open: bool | None = None,
        close_returns: bool = False,
        # leak detection
        leak_threshold: float | None = 60.0,
        capture_stacks: str = "sampled",
        stack_sample_rate: float = 0.05,
        reclaim_leaked: bool = False,
        reclaim_factor: float = 2.0,
        # tenants, priorities, bursts
        tenant_limits: dict[str, int] | None = None,
        default_tenant_limit: int | None = None,
        tenant_wait: bool = True,
        priority_aging: float = 1.0,
        burst_size: int | None = None,
        burst_wait_threshold: float = 0.1,
        burst_lifetime: float = 60.0,
        pgbouncer: bool | None = None,
        clock: Callable[[], float] | None = None,
        # another kind of connection: a drivers.Driver that makes, checks, resets and closes them
        driver: Driver | None = None,
        # folders whose frames are never the borrower's: a framework layered on the pool
        framework_dirs: tuple[str, ...] = (),
    ) -> None:
        # One clock for every part of the pool: lifetimes, idle limits, leak ages, waits.
        self._clock: Callable[[], float] = clock or time.monotonic
        # Validate everything before any thread or connection exists (see config.py).
        given = locals()
        cfg = PoolConfig.build(**{k: given[k] for k in PoolConfig.PARAMETERS}, null=not self._keep_idle)
        self.config = cfg  # frozen: what the pool was made with (resize changes min/max_size only)
        check = cfg.checks.check
        self._tenants = TenantBook(cfg.tenants.limits, cfg.tenants.default_limit)
        self.tenant_wait = cfg.tenants.wait
        self.priority_aging = cfg.tenants.priority_aging
        self.burst_size = cfg.burst.size
        self.burst_wait_threshold = cfg.burst.wait_threshold
        self.burst_lifetime = cfg.burst.lifetime
        self.name = cfg.connection.name or f"{self._default_name}-{next(_pool_ids)}"
        self.min_size = cfg.sizing.min_size
        self._max_size = cfg.sizing.max_size  # UNLIMITED in a null pool without a cap (max_size reads 0)
        self.timeout = cfg.sizing.timeout
        self.max_waiting = cfg.sizing.max_waiting
        self.num_workers = cfg.sizing.num_workers
        self.max_lifetime = cfg.lifecycle.max_lifetime
        self.max_idle = cfg.lifecycle.max_idle
        self.reconnect_timeout = cfg.lifecycle.reconnect_timeout
        self.check_timeout = cfg.checks.check_timeout
        self._ref = weakref.ref(self)  # what a retired handle keeps of its pool
        # The check rule: validate before a borrow what rested longer than this (-1: always).
        self._check_after: float = {"auto": AUTO_CHECK_IDLE, "always": -1.0, "never": math.inf}[
            check if isinstance(check, str) else "always"
        ]
        # The connector makes, checks, resets and closes connections: the pool never talks to one.
        self._connector = Connector.for_pool(self.name, cfg.connection, connect_timeout=cfg.lifecycle.connect_timeout,
                                             network_timeout=cfg.lifecycle.network_timeout,
                                             check=check if callable(check) else None,
                                             check_timeout=self.check_timeout, clock=self._clock,
                                             driver=driver)  # fmt: skip
        self._target = self._connector.target  # host:port/dbname, for messages: never the password
        self._nothing_to_reset = self._connector.reset_callback is None
        self.conninfo, self.kwargs = self._connector.conninfo, self._connector.kwargs
        self.pgbouncer = self._connector.pgbouncer
        self.connection_class = connection_class
        self.close_returns = close_returns  # the handle's close(): False closes, True returns
        self._reconnect_failed = reconnect_failed
        self._housekeeper = Housekeeper(self.max_idle, self._max_size, self.burst_size, self.burst_wait_threshold)
        lk = cfg.leaks
        self._leaks = (LeakDetector(lk.threshold, lk.capture_stacks, lk.stack_sample_rate, lk.reclaim,
                                    lk.reclaim_factor, framework_dirs)
                       if lk.threshold is not None else None)  # fmt: skip
        self.leak_threshold = self._leaks.threshold if self._leaks is not None else None
        # What a borrow and a return record for the leak detector (no-ops when detection is off).
        self._sight = self._leaks.sight if self._leaks is not None else _NO_SIGHT
        self._sight_return = self._leaks.sight_return if self._leaks is not None else _NO_SIGHT
        self._init_state()
        self._opened = False  # these three: written under the lock (open, close, __del__)
        self._opened_at = 0.0
        self._closed = False
        self._server_facts = advisor.ServerFacts()  # what the server said of its limits (its own lock)
        forking.register(self, self._before_fork, self._after_fork_child, self._after_fork_parent)
        # psycopg_pool's None: open now, and warn on the first borrow unless a with block
        # entered the pool (its default is to become False; ours follows it)
        self._open_implicit = open is None
        if open is None or open:
            self.open()

    def _init_state(self) -> None:
        """Everything that a fork must rebuild: the lock, the queues, the counts, the threads.
        Every field below is guarded by the lock unless its comment says otherwise."""
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)  # wait() waits; see there who notifies
        self._idle: deque[Slot] = deque()  # idle connections, LIFO: pop() takes the warmest
        self._pop_idle = self._idle.popleft if self._fifo_idle else self._idle.pop  # or the longest idle
        self._waiting: deque[Queued] = deque()  # borrowers in arrival order
        self._all: dict[int, Slot] = {}  # every live connection, idle or out
        self._nconns = 0  # live connections (== len(self._all))
        self._growing = 0  # connections being created by the workers right now
        self._gen = getattr(self, "_gen", 0) + 1
        # FIFO on the fast path while no tenant or priority was ever asked for; the first one switches
        # to quotas.py's order for good (a one-way switch)
        self._fifo_only = not self._tenants.active
        self._cap = self._max_size  # growth ceiling: max_size, or burst_size while bursting
        self._demand_samples: deque[tuple[float, int, int]] = deque(
            maxlen=600
        )  # (when, attempts, unserved), one per housekeeping round
        self._futures = Futures(self, self._clock)  # getconn_future's (its own lock)
        self._pid = os.getpid()
        self._borrows = self._waits = self._timeouts = self._rejected = 0
        self._created = self._closed_count = self._create_errors = self._discarded_broken = 0
        self._expired = self._idle_closed = self._check_failed = self._reset_failed = 0
        self._last_error: str | None = None
        self._forked_parent = getattr(self, "_forked_parent", False)  # see _after_fork_parent
        # psycopg_pool-style totals (get_stats/pop_stats); pop_stats moves _stats_base.
        self._wait_sum = self._usage_sum = self._connect_sum = 0.0
        self._returns_bad = self._config_errors = 0  # config_errors: borrows failed fast, refused
        self._attempts_started = 0  # connects begun (psycopg_pool's connections_num counts them as they start)
        self._housekeeper_runs = 0  # ticks of the housekeeper (stats: is it alive?)
        self._stats_base: dict[str, float] = {}
        self._connect_attempts: deque[float] = deque(maxlen=64)
        # The windows take appends without the lock (one deque append is atomic).
        self._wait_window, self._hold_window = Window(), Window()
        self._create_window = Window(256)  # seconds each successful connect took
        self._wire_observers()
        self._tasks = workers.TaskQueue()
        self._stop = threading.Event()
        # Wakes the housekeeper before its next deadline (workers._housekeeper clears it): set by
        # add_connection (a lifetime may end sooner), resize, a borrower queueing while the
        # housekeeper sleeps long (_admit_locked), and _shut_down (after _stop).
        self._nudge = threading.Event()
        self._hk_quiet = False  # the housekeeper's last round found the pool quiet (under the lock)
        self._hk_attempts = -1  # borrow attempts counted at that round (under the lock)
        self._threads: list[threading.Thread] = []

    def add_observer(self, observer: Any) -> None:
        """Be told of borrows, returns and connects: ``observer`` may have any of ``acquired``,
        ``released``, ``connected`` (seconds) and ``tenant_acquired(label, seconds)`` (the label:
        the tenant if it has a quota, else "other"). Called without the pool lock: be quick."""
        with self._lock:
            self._observers: list[Any] = [*self._observers, observer]
            self._wire_observers()

    def _wire_observers(self) -> None:
        """The recorders the hot path calls (stats.recorders). Written under the lock (or
        before any other thread exists), each replaced whole; the hot path reads them without
        it: a reference read is atomic, and the old and the new recorder both work."""
        self._observers = getattr(self, "_observers", [])
        self._on_acquire, self._on_release, self._on_connect, self._tenant_observer = stats.recorders(
            self._wait_window, self._hold_window, self._create_window, self._observers
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start the background threads and fill the pool to ``min_size``, in the background
        (retrying with backoff until the database answers), or with ``wait=True`` before this
        returns: see ``wait()``."""
        positive("timeout", timeout)
        with self._lock:
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} is already closed: a closed pool cannot be reopened")
            start = not self._opened
            self._opened = True
            self._opened_at = self._opened_at or self._clock()
            if start:
                self._fill_locked()
        if start:
            self._start_threads()
            logger.info("pool %r: opened (min_size=%d, max_size=%d, target %s)", self.name,
                        self.min_size, self.max_size, self._target)  # fmt: skip
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Block until the pool holds ``min_size`` connections; close it and raise on timeout
        (``PoolTimeout``), at once on a configuration error (``PoolConfigError``). A pool that
        is closed, or not opened, raises ``PoolClosed``."""
        deadline = self._clock() + timeout
        with self._lock:
            if not self._opened and not self._closed:
                raise PoolClosed(f"pool {self.name!r} is not open yet: call open()")
            # Critical section: _filled is notified by add_connection, attempt_failed, close.
            while self._nconns < self.min_size and not self._closed and self._refusal_locked() is None:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._filled.wait(remaining)
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} was closed while waiting for it to fill")
            ok = self._nconns >= self.min_size
            refusal = self._refusal_locked()
            msg = (f"pool {self.name!r}: could not open {self.min_size} connection(s) to {self._target} "
                   f"within {timeout:g} s (have {self._nconns}); last error: {self._last_error or 'none'}")  # fmt: skip
        if not ok:
            self.close()  # as psycopg_pool: a pool that failed to fill is closed
            if refusal is not None:
                with self._lock:
                    raise self._config_error_locked(refusal)
            raise PoolTimeout(msg)

    def _start_threads(self) -> None:
        threads = workers.start(self.name, self._create_one, self._housekeep, self._tasks, self._stop,
                                self.num_workers, self._nudge)  # fmt: skip
        with self._lock:
            # Critical section: close() may have run since open() decided to start the threads.
            # It told the threads it saw (under this lock) to end; these it did not see are
            # told here. Either way each creator gets exactly one stop sentinel.
            self._threads = threads
            closed = self._closed
        if closed:
            self._tasks.shutdown(len(threads))  # (the stop event is set: the housekeeper ends)
            return
        if self._leaks is not None:
            self._leaks.start(self)
            with self._lock:
                closed = self._closed
            if closed:  # closed between the two: its stop() may have come before this start()
                self._leaks.stop(join=False)

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: idle connections now, borrowed ones when they come back. Waiters get
        ``PoolClosed``. Background threads are joined for up to ``timeout`` s."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = self._drain_idle_locked()
            waiters = list(self._waiting)
            self._waiting.clear()
            for w in waiters:
                w.wake(error=PoolClosed(f"pool {self.name!r} was closed while waiting"))
            self._filled.notify_all()
            out = self._nconns
            threads = self._threads  # those started so far; _start_threads stops any later ones
        self._shut_down(idle, join=True, threads=threads)  # the futures' after the PoolClosed resolutions above
        me = threading.current_thread()
        deadline = self._clock() + timeout
        for t in threads:
            if t is not me:
                t.join(max(0.0, deadline - self._clock()))
        logger.info("pool %r: closed (%d idle closed, %d still borrowed)", self.name, len(idle), out)

    def _shut_down(self, idle: list[Slot], join: bool, threads: list[threading.Thread] | None = None) -> None:
        """After the lock: the threads told to end (``threads``: those read under the lock),
        ``idle`` closed, the services stopped."""
        self._stop.set()
        self._nudge.set()  # the housekeeper sees _stop at once
        self._tasks.shutdown(len(self._threads if threads is None else threads))
        for slot in idle:
            self._close_slot(slot)
        if self._leaks is not None:
            self._leaks.stop(join=join)
        self._futures.stop()

    @property
    def max_size(self) -> int:
        """The most connections at once; 0 in a NullConnectionPool made without a cap (0 or
        None: no limit of ours), as psycopg_pool reads it."""
        return 0 if self._max_size >= UNLIMITED else self._max_size

    @property
    def closed(self) -> bool:
        """True until ``open()`` and after ``close()``, as in psycopg_pool."""
        return self._closed or not self._opened

    def __enter__(self) -> ConnectionPool:
        self._open_implicit = False  # a with block says when the pool opens and closes
        if not self._opened:
            self.open()
        return self

    def _warn_open_implicit(self) -> None:
        """psycopg_pool's deprecation, word for word in substance: ``open`` will default to
        False. Once per pool, on its first borrow (a with block clears it first)."""
        self._open_implicit = False
        cls = type(self).__name__
        msg = (f"the default for the {cls} 'open' parameter will become 'False' in a future release, as "
               f"psycopg_pool's: pass open=True (or open=False and call open()) explicitly, or use the pool as a "
               f"context manager: `with {cls}(...) as pool: ...`")  # fmt: skip
        warnings.warn(msg, DeprecationWarning, stacklevel=3)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped without close() (a borrowed handle keeps its pool alive: none is out): end
        # the threads, close the idle connections (not one ResourceWarning each). A finalizer
        # must never block or raise: the lock only if free.
        try:
            idle: list[Slot] = []
            if self._pid == os.getpid() and self._lock.acquire(blocking=False):
                try:
                    if not self._closed:
                        self._closed = True
                        idle = self._drain_idle_locked()
                finally:
                    self._lock.release()
            self._shut_down(idle, join=False)
        except Exception:
            pass

    def __contains__(self, conn: object) -> bool:
        """True while ``conn`` is a handle borrowed from this pool and not yet returned."""
        return type(conn) is PooledConnection and conn._home is self and conn._raw is not None

    # -- borrowing: admit, wait, grant, finish ------------------------------------------------
    def getconn(
        self, timeout: float | None = None, *, tenant: str | None = None, priority: float | None = None
    ) -> PooledConnection:
        """Borrow a connection; wait up to ``timeout`` s (default: the pool's) in FIFO order
        (by priority first, when priorities are used). ``tenant`` counts against its quota.
        ``connection()`` is the same call, for a ``with`` block: commit on success, roll back
        on error, and give it back in both cases (the handle's ``__exit__``)."""
        if self._open_implicit:
            self._warn_open_implicit()
        t0 = now = self._clock()
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        deadline = None  # computed once, by the first wait: the fast path needs none
        site = self._sight()  # for the leak detector: where the user borrows (None when off)
        ident = get_ident()
        # the leak detector keeps the thread too, so a report still names it after it ended
        me = _thread_of(ident) if site is not None else None
        counted = False  # did it queue, with a wait the stats count (_wait_for_slot says)
        while True:
            handle = earlier = None
            with self._lock:
                # Critical section: fast path. An idle connection and nobody queued before us:
                # take it and, unless it must be validated first, finish the borrow here.
                if self._fifo_only and self._idle and not self._waiting and not self._closed \
                        and tenant is None and priority is None:  # fmt: skip
                    slot: Slot | None = self._pop_idle()
                    if now <= slot.check_at:  # type: ignore[union-attr]
                        # _finish_borrow_locked, inlined (the hot path: a call is 0.15 us of a
                        # 2.5 us cycle), with no wait to count; test_invariants holds the two
                        # to the same record
                        self._borrows += 1
                        slot.borrowed_at = now  # type: ignore[union-attr]
                        slot.owner = ident  # type: ignore[union-attr]
                        slot.thread = me  # type: ignore[union-attr]
                        slot.site = site  # type: ignore[union-attr]
                        handle = _new_handle(PooledConnection)
                        handle._home = self
                        handle._slot = slot
                        handle._raw = slot.raw  # type: ignore[union-attr]
                        slot.handle = handle  # type: ignore[union-attr]
                        # The last idle one, with others out: does this thread hold one? (A
                        # nested borrow that has to wait can deadlock the pool.)
                        if not self._idle and self._nconns > 1 and self._leaks is not None:
                            earlier = self._held_by_locked(ident, slot)
                else:
                    slot = None
            if handle is None:
                if slot is None:  # admitted to the queue: wait until granted one
                    if deadline is None:
                        timeout = self.timeout if timeout is None else timeout
                        deadline = t0 + timeout
                    slot, handle, counted = self._wait_for_slot(deadline, timeout, tenant, priority, ident, site, me)
                    now = self._clock()
                    if self.burst_size is not None and now - t0 > 0.0005:
                        self._housekeeper.slow_waits.append((now, now - t0))
                if handle is None:
                    # The slot is ours and no handle holds it yet: an exception (Ctrl-C too)
                    # must give it back, or the pool is one connection short.
                    try:
                        if now > slot.check_at:
                            if deadline is None:
                                timeout = self.timeout if timeout is None else timeout
                                deadline = t0 + timeout
                            # The check gets the time left, at most check_timeout: a silent
                            # server must not hold the borrower past its deadline.
                            if not self._validate(slot, deadline - now):
                                now = self._clock()
                                if now >= deadline:
                                    raise self._checks_timed_out(timeout, tenant)
                                continue  # discarded; try again within the same deadline
                        with self._lock:
                            waited = now - t0 if counted else 0.0
                            handle = self._finish_borrow_locked(slot, now, ident, site, me, waited)
                    except BaseException:
                        self._put_back(slot)
                        raise
            # Every borrow ends here, however it was served.
            try:
                self._on_acquire(now - t0)
                if tenant is not None and self._tenant_observer is not None:
                    self._tenant_observer(self.tenant_label(tenant), now - t0)
                if earlier is not None:
                    self._leaks.saw_nested(self.name, earlier, site, me or current_thread(), False)  # type: ignore[union-attr]
            except BaseException:
                self._put_back(slot)  # type: ignore[arg-type]
                raise
            return handle

    # psycopg_pool's with-block borrow: the very same call (no extra frame)
    connection = getconn

    def _admit_locked(self, tenant: str | None, priority: float | None, waiter: Queued) -> Slot | None:
        """Critical section: a connection ready now (its slot), or queue ``waiter`` (None). A
        waiter leaves _waiting only under this lock, so none is served after it gave up."""
        quotas.check_request(tenant, priority)
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is already closed")  # psycopg_pool's words
        if not self._opened:
            raise PoolClosed(f"pool {self.name!r} is not open yet: call open()")
        if tenant is not None or priority is not None:
            self._fifo_only = False
        if self._fifo_only:
            if self._idle and not self._waiting:
                return self._pop_idle()
        elif self._tenants.under_quota(tenant):
            # While a connection is idle no queued waiter is eligible (quotas.py): take it.
            if self._idle:
                slot = self._pop_idle()
                self._take_quota_locked(slot, tenant)
                return slot
        elif not self.tenant_wait:
            self._rejected += 1
            self._tenants.count(tenant, "rejected")
            raise TenantQuotaExceeded(
                f"pool {self.name!r}: tenant {tenant!r} already holds its quota of "
                f"{self._tenants.limit(tenant)} connection(s)"  # type: ignore[arg-type]
            )
        refusal = self._refusal_locked()
        if refusal is not None:
            # Refused, and no connection: waiting cannot help. One background attempt at a
            # time goes on (at the backoff's pace), so a fixed password is picked up.
            self._config_errors += 1
            if self._growing == 0:
                self._create_locked(1)
            raise self._config_error_locked(refusal)
        if self.max_waiting and len(self._waiting) >= self.max_waiting:
            self._rejected += 1
            self._tenants.count(tenant, "rejected")
            raise TooManyWaiters(
                f"pool {self.name!r}: {len(self._waiting)} borrowers already waiting (max_waiting={self.max_waiting})"
            )
        self._waiting.append(waiter)
        # A wait for a connection already there or coming back. A null pool's borrow that a
        # new connection will serve is not one (psycopg_pool's null pool connects in the
        # borrower's thread: not queued); only one beyond the room to make them is.
        if self._keep_idle or len(self._waiting) > self._cap - self._nconns:
            self._waits += 1
            self._tenants.count(tenant, "waits")
        elif type(waiter) is Waiter:
            waiter.counted = False
        self._grow_locked()
        if self._hk_quiet:  # the housekeeper sleeps long: waits matter to bursts and the advisor
            self._hk_quiet = False
            self._nudge.set()
        return None

    def _wait_for_slot(self, deadline: float, timeout: float, tenant: str | None, priority: float | None, owner: int,
                       site: Any, thread: threading.Thread | None,
                       ) -> tuple[Slot, PooledConnection | None, bool]:  # fmt: skip
        """Queue and wait: the slot; its handle when the granter could finish the borrow
        already (no validation due: this thread takes no pool lock again); and whether the wait
        counts in the stats (Waiter.counted)."""
        w = Waiter(tenant, float(priority or 0.0), self._clock(), owner, site, thread)
        earlier, stuck = None, False
        with self._lock:
            got = self._admit_locked(tenant, priority, w)
            if got is None and self._leaks is not None:
                earlier = self._held_by_locked(owner, None)  # waiting while holding one: could deadlock
                # ... only if nothing but a return can serve it: at the ceiling, none on its way
                # (a replacement being made, or room to grow, serves it without a return).
                stuck = self._growing == 0 and self._nconns >= self._cap
        if got is not None:
            return got, None, False
        if earlier is not None:
            self._leaks.saw_nested(self.name, earlier, site, thread or current_thread(), stuck)  # type: ignore[union-attr]
        try:
            # Our own condition (Waiter.signal), released by whoever serves us: _hand_over_locked,
            # _dispatch_locked (a connection), close(), attempt_failed (an error).
            while True:
                remaining = deadline - self._clock()
                if remaining <= 0 or w.signal.acquire(True, min(remaining, threading.TIMEOUT_MAX)):
                    break
        except BaseException:  # KeyboardInterrupt, a signal handler's exception: leave the queue
            self._abandon(w)
            raise
        if w.slot is None and w.error is None:
            with self._lock:
                # Critical section: give up, unless served while the wait was timing out.
                if w.slot is None and w.error is None:
                    self._waiting.remove(w)
                    self._wait_sum += self._clock() - w.since  # psycopg_pool's requests_wait_ms counts it
                    self._timeouts += 1
                    self._tenants.count(tenant, "timeouts")
                    raise self._timeout_error_locked(timeout, earlier)
        if w.error is not None:
            raise w.error
        return w.slot, w.handle, w.counted  # type: ignore[return-value]

    def _hand_over_locked(self, slot: Slot) -> None:
        """The granter: ``slot`` to the next waiter (the oldest, or quotas.py's pick), or idle.
        Called by whoever frees a connection (putconn, a new connection, an undone grant)."""
        if self._fifo_only:
            if self._waiting:
                w = self._waiting.popleft()
                w.wake(slot, handle=self._prefinish_locked(w, slot))
            else:
                self._idle.append(slot)
            return
        self._idle.append(slot)
        self._dispatch_locked()

    def _dispatch_locked(self) -> None:
        """Scheduler mode: serve eligible waiters while connections are idle."""
        while self._idle and self._waiting:
            w = quotas.pick(self._waiting, self._tenants, self._clock(), self.priority_aging)
            if w is None:
                return
            slot = self._pop_idle()
            self._take_quota_locked(slot, w.tenant)
            w.wake(slot, handle=self._prefinish_locked(w, slot))

    def _prefinish_locked(self, w: Queued, slot: Slot) -> PooledConnection | None:
        """Finish a waiter's borrow under the granter's lock, unless a check is due (then the
        waiter checks and finishes). Futures finish theirs in the notifier (hand_out)."""
        if type(w) is not Waiter:
            return None
        now = self._clock()
        if now > slot.check_at:
            return None
        return self._finish_borrow_locked(slot, now, w.owner, w.site, w.thread, now - w.since if w.counted else 0.0)

    def _finish_borrow_locked(self, slot: Slot, now: float, owner: int, site: Any, thread: threading.Thread | None,
                              waited: float) -> PooledConnection:  # fmt: skip
        """The end of every borrow, under the lock (the watchdog, a reclaim, a fork never see one
        half done): where a borrow is counted, with its wait. getconn's fast path does the same
        inline (no wait to count)."""
        self._borrows += 1
        if waited:  # (a float add makes a new object: skipped on the fast path, which waits 0)
            self._wait_sum += waited
        slot.borrowed_at = now
        slot.owner = owner
        slot.thread = thread
        slot.site = site
        # the handle (its fields: see PooledConnection), made without an __init__ frame
        handle = _new_handle(PooledConnection)
        handle._home = self
        handle._slot = slot
        handle._raw = slot.raw
        slot.handle = handle
        return handle

    def _held_by_locked(self, ident: int, but: Slot | None) -> Slot | None:
        """Another connection thread ``ident`` holds (O(size): asked only of a borrow that waits
        or takes the last idle one)."""
        for s in self._all.values():
            if s.owner == ident and s.handle is not None and s is not but:
                return s
        return None

    # -- returning ----------------------------------------------------------------------------
    def putconn(self, conn: PooledConnection, exc: BaseException | None = None, commit: bool | None = None) -> None:
        """Give a connection back. Any open transaction is rolled back, settings restored.

        After ``close()`` the connection is closed instead, quietly (as psycopg_pool). With
        ``commit`` given, this is the end of a ``with`` block (the handle's ``__exit__``, in one
        call): an open transaction is committed when ``commit`` is true, else rolled back, and
        a fatal ``exc`` marks the connection broken.
        """
        slot = conn._slot if type(conn) is PooledConnection and conn._home is self else None
        if type(slot) is not Slot:  # foreign, already returned, or reclaimed meanwhile
            return self._bad_return(conn)
        back = self._sight_return()  # where the caller gives it back (None when detection is off)
        raw, connector = slot.raw, self._connector
        status = connector.status(raw)
        if commit is not None and (status != IDLE or exc is not None):
            try:
                connector.end_block(raw, status, commit, exc, slot)
            except BaseException:
                self.putconn(conn)  # a failed commit: the connection still goes back
                raise
            status = connector.status(raw)
        now = self._clock()
        held = now - slot.borrowed_at
        self._on_release(held)
        # Why it cannot be reused: None (it can), "closed", "broken" or "reset_failed" (see
        # Connector.reset). The common case, an idle connection with nothing to restore, costs
        # the one status read above.
        # ``seen``: the settings as the borrower left them, for the dead handle to read: what
        # configure left, unless the borrow wrote one (then read before the reset restores them).
        # ``unreset``: not reset, as it is to be closed (read again under the lock below).
        unreset = False
        if status == IDLE and not slot.return_flags and self._nothing_to_reset:
            unfit, seen = None, slot.settings
        else:
            seen = connector.seen(raw) if slot.return_flags & DIRTY else slot.settings
            if slot.return_flags & BROKEN:  # closed by conn.close(), or a fatal error: no reset
                unfit = "closed"
            elif self._closed or (not self._keep_idle and not self._waiting and len(self._idle) >= self._idle_cap):
                # A connection nobody will borrow again (the pool closed; a null pool that
                # nobody waits on) is closed without a reset, as psycopg_pool's: ``reset``
                # runs once per connection lent again. (A borrower queueing meanwhile gets a
                # new one.)
                unfit, unreset = None, True
            else:
                unfit = connector.reset(slot)
        close = unfit is not None
        with self._lock:
            # Critical section: the handle is retired, the connection goes to the oldest waiter,
            # idle, or away. A concurrent second return (or a reclaim) fails on slot.handle
            # here; slot.expires is read here since resize() and drain() write it here.
            if slot.handle is not conn:
                raise bad_return_error(conn, self)  # returned twice, by two threads at once
            slot.handle = None
            self._usage_sum += held
            # retire the handle (PooledConnection._retire, inlined: this is the hot path)
            conn._raw = conn._slot = None
            conn._home = self._ref
            conn._seen = seen
            conn._borrowed_from = slot.site  # what outlives the handle names them
            conn._returned_from = back
            if slot.tenant is not None:
                self._release_quota_locked(slot)
            report = slot.report
            if report is not None:
                slot.report = None
            if slot.gen != self._gen:  # borrowed before a fork: not ours to close
                return
            if self._closed:
                close = True
                self._forget_locked(slot)
            elif close or unreset or now >= slot.expires or (not self._keep_idle and not self._waiting
                                                             and len(self._idle) >= self._idle_cap):  # fmt: skip
                if close:
                    self._returns_bad += 1
                    if unfit == "reset_failed":
                        self._reset_failed += 1
                    else:
                        self._discarded_broken += 1
                elif now >= slot.expires:
                    self._expired += 1
                close = True
                self._discard_locked(slot)
            else:
                slot.last_used = now  # _rest_locked, inlined: the hot path
                slot.check_at = now + self._check_after
                # Hand it to the oldest waiter (woken on its own condition), or make it idle.
                if self._waiting or not self._fifo_only:
                    self._hand_over_locked(slot)
                else:
                    self._idle.append(slot)
        if report is not None:
            self._leaks.on_return(report, held)  # type: ignore[union-attr]
        if close:
            self._close_slot(slot)
            if unfit == "broken" or unfit == "reset_failed":  # the borrower may not know: say so
                connector.warn_discarded(slot)
        # A return into a closed pool is quiet, as psycopg_pool's: the connection is closed
        # (above), which is all the caller could want. Django's backend returns connections
        # into a pool it closed itself (close_pool() on a settings change).

    def release(self, conn: PooledConnection, exc: BaseException | None = None, commit: bool = False) -> None:
        """Give a connection back as a ``with`` block ends (Flask's teardown): ``putconn`` with
        ``commit`` (False: roll back, on purpose, so no warning)."""
        self.putconn(conn, exc, commit)

    def _rest_locked(self, slot: Slot, now: float) -> None:
        """A connection comes to rest: it ages from now; a borrow after check_at validates it."""
        slot.last_used = now
        slot.check_at = now + self._check_after

    def _bad_return(self, conn: Any) -> None:
        """Not a return: raise what it is (foreign, returned twice, reclaimed), but take one
        putconn after ``conn.close()`` quietly (psycopg_pool's close-then-putconn)."""
        if type(conn) is PooledConnection and conn._owner() is self:
            with self._lock:
                if conn._take_close_pending():
                    return
        raise bad_return_error(conn, self)

    # -- undo: a borrow that did not happen, a connection that leaves ---------------------------
    def _abandon(self, w: Waiter) -> None:
        """A waiter leaves on an exception: give up its place, or the connection it was
        granted in the meantime."""
        with self._lock:
            slot, w.slot, w.handle = w.slot, None, None
            if slot is None:
                if w in self._waiting:
                    self._waiting.remove(w)
                return
        self._put_back(slot)

    def _put_back(self, slot: Slot) -> None:
        """A slot taken for a borrow that failed before its borrower got the handle, or for a
        check, goes back (or is closed, when the pool closed meanwhile)."""
        with self._lock:
            if self._all.get(slot.id) is not slot:
                return  # discarded meanwhile (failed validation)
            victim = self._undo_grant_locked(slot)
        if victim is not None:
            self._close_slot(victim)

    def _undo_grant_locked(self, slot: Slot) -> Slot | None:
        """Undo a grant that never reached its borrower (its handle retired, its borrow
        uncounted, its quota released) and hand it on; or, the pool closed, the slot to close."""
        handle = slot.handle
        if handle is not None:
            handle._retire(None)
            slot.handle = None
            self._borrows -= 1
        self._release_quota_locked(slot)
        if self._closed:
            self._forget_locked(slot)
            return slot
        self._hand_over_locked(slot)
        return None

    def _take_quota_locked(self, slot: Slot, tenant: str | None) -> None:
        if tenant is not None:
            self._tenants.take(tenant)
            slot.tenant = tenant

    def _release_quota_locked(self, slot: Slot) -> None:
        """The tenant's quota, back (the one place it is given back)."""
        if slot.tenant is not None:
            self._tenants.release(slot.tenant)
            slot.tenant = None

    def _forget_locked(self, slot: Slot) -> None:
        """A connection leaves (the caller closes it after the lock): the one place it is counted."""
        self._closed_count += 1
        if self._all.pop(slot.id, None) is not None:
            self._nconns -= 1
        if slot.tenant is not None:  # a lent connection went away: its quota frees up
            self._release_quota_locked(slot)
            self._dispatch_locked()

    def _discard_locked(self, slot: Slot) -> None:
        """A connection leaves the pool for good; replace it if somebody needs one."""
        self._forget_locked(slot)
        self._grow_locked()
        self._fill_locked()

    def _drain_idle_locked(self) -> list[Slot]:
        """Every idle connection out of the pool, for the caller to close after the lock."""
        idle = list(self._idle)
        self._idle.clear()
        for slot in idle:
            self._forget_locked(slot)
        return idle

    def _close_slot(self, slot: Slot) -> None:
        self._connector.close_quietly(slot.raw)

    # -- borrowing through a future (future.Granter: future.py does the rest) ---------------
    def getconn_future(
        self, timeout: float | None = None, *, tenant: str | None = None, priority: float | None = None
    ) -> Future[PooledConnection]:
        """Borrow through a ``concurrent.futures.Future``, in the same fair queue as getconn:
        it resolves to a connection (give it back with ``putconn``) or fails with PoolTimeout or
        PoolClosed; cancelling it gives its place (or its connection) back. asyncio:
        ``asyncio.wrap_future(pool.getconn_future())``."""
        return self._futures.borrow(timeout, tenant, priority, self._sight())  # the site: the caller's line

    def _admit(self, w: Any, tenant: str | None, priority: float | None) -> Slot | None:
        while True:
            with self._lock:
                slot = self._admit_locked(tenant, priority, w)
            now = self._clock()
            if slot is None or now <= slot.check_at or self._validate(slot, w.deadline - now):
                return slot  # (a slot that failed validation is gone: admit again, in time)
            if self._clock() >= w.deadline:
                raise self._checks_timed_out(w.timeout, tenant)

    def _hand_out(self, slot: Slot, since: float, thread: threading.Thread, site: Any,
                 checked: bool = False) -> PooledConnection | None:  # fmt: skip
        now = self._clock()
        # A connection granted to a queued future is checked here, when due, as getconn checks
        # one granted to a thread (admit already checked one it served at once: ``checked``).
        if not checked and now > slot.check_at and not self._validate(slot):
            return None  # discarded: the future queues again (future.Notifier._resolve)
        with self._lock:
            handle = self._finish_borrow_locked(slot, now, thread.ident or 0, site, thread, now - since)
        self._on_acquire(now - since)
        return handle

    def _cancel_waiter(self, w: Queued) -> None:
        with self._lock:
            if w.slot is None and w in self._waiting:
                self._waiting.remove(w)

    def _expire_waiter(self, w: Any) -> str | None:
        with self._lock:
            if w.slot is not None or w.error is not None or w not in self._waiting:
                return None
            self._waiting.remove(w)
            self._wait_sum += self._clock() - w.since  # a wait that timed out counts too
            self._timeouts += 1
            self._tenants.count(w.tenant, "timeouts")
            return self._timeout_message_locked(w.timeout)

    # -- why a borrow failed ------------------------------------------------------------------
    def _refusal_locked(self) -> tuple[str, BaseException] | None:
        """The configuration error (its text and exception) when the pool has no connection,
        else None. Read once per decision, and the error is made from that same read: the
        connector may clear it at any moment (a success), and a second read would say the
        server "refuses … None"."""
        refusal = self._connector.refusal  # one reference: text and exception together
        return refusal if refusal is not None and self._nconns == 0 else None

    def _config_error_locked(self, refusal: tuple[str, BaseException]) -> PoolConfigError:
        text, exc = refusal
        return errors.config_error(self.name, self._target, text, exc, retrying=not self._closed)

    def _timeout_error_locked(self, timeout: float, held: Slot | None = None) -> PoolTimeout:
        """The timeout; ``held``: a connection the waiting thread holds (a deadlock to say)."""
        msg = self._timeout_message_locked(timeout)
        if held is not None and held.handle is not None:
            msg += "; " + held_text(held)
        unreachable = self._last_error if self._nconns == 0 else None
        return errors.timeout_error(msg, unreachable, self._connector.last_exc)

    def _timeout_message_locked(self, timeout: float) -> str:
        """The borrower that timed out has left the queue (or never joined it, when its checks
        ate its time): it was waiting too, so it counts in ``waiting=``."""
        msg = errors.timeout_message(self.name, timeout, self._nconns, len(self._idle), len(self._waiting) + 1,
                                     self.max_size, self._last_error)  # fmt: skip
        holders = sorted((s for s in self._all.values() if s.handle is not None), key=lambda s: s.borrowed_at)
        if holders and self._leaks is not None:
            msg += "; top holders: " + holders_text(holders[:3], self._clock())  # type: ignore[arg-type]
        return msg

    # -- connection lifecycle: the connector makes them, the housekeeper retires them ---------
    def _validate(self, slot: Slot, timeout: float | None = None, *, sweep: bool = False) -> bool:
        """Check a connection at borrow time (the connector does, within ``timeout``: the
        borrower's time left); a failed one is replaced. A check that timed out points at a
        silent link: the other idle connections due for a check are tested in the background
        (HikariCP's soft eviction) rather than lent one by one for each to time out in turn."""
        err = self._connector.validate(slot, timeout, sweep=sweep)
        if err is None:
            return True
        logger.info("pool %r: connection %d failed validation, discarded: %s",
                    self.name, slot.id, self._connector.scrub(str(err)))  # fmt: skip
        suspects: list[Slot] = []
        with self._lock:
            self._check_failed += 1
            self._discarded_broken += 1
            self._discard_locked(slot)
            if isinstance(err, ValidationTimeout) and not self._closed:
                # Critical section: out of the idle set at once, so no borrower takes one.
                now = self._clock()
                suspects = [s for s in self._idle if now > s.check_at]
                for s in suspects:
                    self._idle.remove(s)
        if not isinstance(err, CheckTimedOut):  # else its check thread closes it, when done with it
            self._close_slot(slot)
        if suspects:
            logger.warning("pool %r: a check timed out (silent network?): testing %d other idle connection(s) "
                           "in the background", self.name, len(suspects))  # fmt: skip
            self._recheck(suspects)
        return False

    def _recheck(self, suspects: list[Slot]) -> None:
        """Test ``suspects`` (taken out of the idle set) in background threads, each within
        check_timeout: the fit ones go back (to a waiter, or idle), the others are replaced."""
        todo = deque(suspects)  # popleft is atomic: the threads share it without a lock

        def run() -> None:
            while True:
                try:
                    slot = todo.popleft()
                except IndexError:
                    return
                try:
                    if self._validate(slot):
                        self._put_back(slot)
                except BaseException:
                    self._put_back(slot)
                    raise

        for _ in range(min(len(todo), RECHECKERS)):
            threading.Thread(target=run, name=f"{self.name}-recheck", daemon=True).start()

    def _checks_timed_out(self, timeout: float, tenant: str | None) -> PoolTimeout:
        """The borrower's deadline passed while its connections failed their checks."""
        with self._lock:
            self._timeouts += 1
            self._tenants.count(tenant, "timeouts")
            return self._timeout_error_locked(timeout)

    def _grow_locked(self) -> None:
        """Ask for the connections the waiters need, up to the ceiling (_cap)."""
        waiting = len(self._waiting) if self._fifo_only else quotas.eligible(self._waiting, self._tenants)
        self._create_locked(min(waiting - self._growing, self._cap - self._nconns - self._growing))

    def _fill_locked(self) -> None:
        """Ask the workers for connections up to min_size (none in a forked parent)."""
        self._create_locked((0 if self._forked_parent else self.min_size) - self._nconns - self._growing)

    def _create_locked(self, n: int) -> None:
        if n > 0 and self._opened and not self._closed:
            self._growing += n
            for _ in range(n):
                self._tasks.put(workers.CREATE)

    def _create_one(self) -> None:
        """A creator thread's task: the connector makes one connection, retrying at its
        backoff's pace while the pool still needs one, through the seam below."""
        self._connector.make_for(self, self._gen, self._stop, self.max_lifetime,
                                 self._clock() + self.reconnect_timeout, self._reconnect_failed)  # fmt: skip

    # the creators' seam (connector.Growing)
    def _attempting(self, at: float) -> None:
        with self._lock:
            self._connect_attempts.append(at)
            self._attempts_started += 1

    def _attempt_failed(self, failure: Failure, gen: int, took: float, give_up_at: float) -> str:
        with self._lock:
            self._create_errors += 1
            self._connect_sum += took
            self._last_error = failure.message
            refusal = self._refusal_locked()
            if refusal is not None:
                # A permanent failure and no connection: the waiters fail now (PoolConfigError
                # says why), and so does any open(wait=True).
                err = self._config_error_locked(refusal)
                failed, self._waiting = list(self._waiting), deque()
                self._config_errors += len(failed)
                for w in failed:
                    w.wake(error=err)
                self._filled.notify_all()
            needed = bool(self._waiting) or self._nconns + self._growing <= self.min_size
            mine = gen == self._gen and not self._closed  # (else the pool closed, or forked)
            if mine and needed and self._clock() < give_up_at:
                return RETRY
            if gen == self._gen:
                self._growing -= 1
            return GIVE_UP if mine and needed else STOP

    def _add_connection(self, slot: Slot, gen: int, took: float) -> None:
        self._on_connect(took)
        with self._lock:
            keep = gen == self._gen and not self._closed
            if gen == self._gen:
                self._growing -= 1
            if keep:
                if self._nconns >= self._max_size:  # above max_size: a burst connection
                    slot.burst = True
                    slot.expires = min(slot.expires, slot.created + self.burst_lifetime)
                self._all[slot.id] = slot
                self._nconns += 1
                self._created += 1
                self._connect_sum += took  # psycopg_pool's connections_ms: the whole attempt
                self._last_error = None
                self._rest_locked(slot, slot.last_used)
                self._hand_over_locked(slot)
                self._filled.notify_all()  # for wait(), which waits for min_size
        if keep:
            self._nudge.set()  # its lifetime may end before the housekeeper's next deadline
        else:
            self._close_slot(slot)

    def _stopped_growing(self, gen: int) -> None:
        with self._lock:
            if gen == self._gen:
                self._growing -= 1

    def _housekeep(self) -> float:
        """One round of the housekeeper thread (view, then evict): the delay to the next."""
        return self._housekeeper.tick(self)

    # -- the leak detector's seam (leaks.LeaseTable) -------------------------------------------
    def _leased(self) -> list[Slot]:
        """The connections out now (a snapshot taken under the lock)."""
        with self._lock:
            return [s for s in self._all.values() if s.handle is not None]

    def _mark_reported(self, slot: Slot, handle: Any, record: dict[str, Any]) -> bool:
        """Attach a leak report to a borrow, unless it was returned meanwhile."""
        with self._lock:
            if slot.handle is not handle:
                return False
            slot.report = record
            return True

    def _reclaim(self, slot: Slot, handle: Any, error: PoolError) -> bool:
        """Take a leaked connection back: its handle dies (its next use raises ``error``), and
        the connection is aborted (never closed under a thread that may be inside libpq)."""
        with self._lock:
            # Critical section: only if still out under this very handle (a return may win).
            if slot.handle is not handle or self._all.get(slot.id) is not slot:
                return False
            handle._retire(error)
            slot.handle = None
            slot.report = None
            self._discarded_broken += 1
            self._discard_locked(slot)
        self._connector.abort(slot.raw)
        # The borrower by its Thread, never its ident (a new thread may have its ident by now);
        # a borrow made with leak detection's site unknown recorded no Thread: assume alive.
        owner_alive = slot.thread.is_alive() if slot.thread is not None else True
        if not owner_alive:  # nobody can be inside libpq on it: close it for real
            self._close_slot(slot)
        return True

    def _now(self) -> float:
        return self._clock()

    def backend_pids(self) -> list[int]:
        """The server process ids of this pool's connections (idle and out)."""
        with self._lock:
            return sorted(s.pid for s in self._all.values() if s.pid)

    # -- the housekeeper's seam (housekeeper.Sweepable) ----------------------------------------
    def _begin_round(self) -> View:
        """A housekeeping round begins: it is counted, the demand sampled (the burst logic and
        the advisor read the samples), and a snapshot returned, all under the lock in one go."""
        now = self._clock()
        with self._lock:
            self._housekeeper_runs += 1
            timeouts = self._timeouts + self._rejected + self._config_errors
            attempts = self._borrows + timeouts
            self._demand_samples.append((now, attempts, timeouts))  # attempts, and those not served
            # (a lifetime already over is for putconn to act on, when that connection comes back)
            nxt = min((s.expires for s in self._all.values() if s.expires > now), default=math.inf)
            since = now - BURST_WINDOW
            start = next((n for t, n, _ in self._demand_samples if t >= since), attempts)
            keep = 0 if self._forked_parent else self.min_size
            quiet = attempts == self._hk_attempts and not self._waiting and self._nconns + self._growing >= keep
            self._hk_quiet, self._hk_attempts = quiet, attempts
            return View(now, list(self._idle), self._nconns, keep, attempts, start, [w.since for w in self._waiting],
                        nxt, quiet)  # fmt: skip

    def _evict(self, victims: list[tuple[Slot, str]]) -> None:
        """Retire the housekeeper's choices that are still idle, then refill and grow."""
        gone: list[Slot] = []
        with self._lock:
            if self._closed:
                return
            for slot, why in victims:
                # Critical section: only what is idle right now may go.
                try:
                    self._idle.remove(slot)
                except ValueError:
                    continue
                self._forget_locked(slot)
                if why == "expired":
                    self._expired += 1
                else:
                    self._idle_closed += 1
                gone.append(slot)
            self._fill_locked()
            self._grow_locked()
        for slot in gone:
            logger.debug("pool %r: closing connection %d (lifetime or idle limit)", self.name, slot.id)
            self._close_slot(slot)

    def _set_ceiling(self, cap: int) -> None:
        """How far the pool may grow now: max_size, or burst_size while bursting. ``cap`` is
        what the housekeeper computed, maybe before a resize() that ran since: the ceiling is
        read again here, under the lock resize() writes it under, so a late call cannot undo
        the resize."""
        with self._lock:
            self._cap = self._housekeeper.ceiling()
            self._grow_locked()

    # -- maintenance: psycopg_pool's resize, check, drain ---------------------------------------
    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change min_size and max_size at runtime, as psycopg_pool's ``resize``: ``max_size``
        None means ``min_size``. Growing takes effect at once; surplus idle connections close
        now, surplus borrowed ones when they come back."""
        lo, hi = check_sizes(min_size, max_size, null=not self._keep_idle)
        if self.burst_size is not None and self.burst_size < hi:
            raise ValueError(f"max_size ({hi}) must be <= burst_size ({self.burst_size})")
        victims: list[Slot] = []
        self._housekeeper.set_max_size(hi)
        with self._lock:
            self.min_size, self._max_size = lo, hi
            self._cap = self._housekeeper.ceiling()
            excess = self._nconns - self._cap
            while excess > 0 and self._idle:
                slot = self._idle.popleft()  # the longest idle first
                self._forget_locked(slot)
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
        self._nudge.set()  # min_size moved: which idle ones may retire, and when
        for slot in victims:
            self._close_slot(slot)
        logger.info("pool %r: resized to min_size=%d, max_size=%d", self.name, lo, self.max_size)

    def check(self) -> None:
        """Validate every idle connection now (psycopg_pool's ``check()``): failures are
        replaced. Borrowers are not held up: those under test are out of the idle set."""
        with self._lock:
            batch = list(self._idle)
            self._idle.clear()
        for slot in batch:
            if slot.expires <= self._clock():
                with self._lock:
                    self._expired += 1
                    self._discard_locked(slot)
                self._close_slot(slot)
            elif self._validate(slot, sweep=True):
                self._put_back(slot)

    def drain(self, *, idle: bool = True, borrowed: bool = True) -> None:
        """Replace every connection (psycopg_pool's ``drain()``; after a password or DNS change):
        idle ones close now, borrowed ones when they come back. ``idle=False`` or
        ``borrowed=False`` leaves that half alone (FairQueuePool: QueuePool's ``dispose()``
        closes the idle ones only; after ``recreate()`` the borrowed ones close on return)."""
        with self._lock:
            idle_slots = self._drain_idle_locked() if idle else []
            for slot in self._all.values() if borrowed else ():
                if idle or slot.handle is not None:
                    slot.expires = 0.0  # read by putconn under this lock: closes on return
            self._fill_locked()
            self._grow_locked()
        for slot in idle_slots:
            self._close_slot(slot)
        logger.info("pool %r: drained (%d idle closed, %s)", self.name, len(idle_slots),
                    "the borrowed close on return" if borrowed else "the borrowed kept")  # fmt: skip

    # -- reporting ------------------------------------------------------------------------------
    def _counts_locked(self) -> dict[str, Any]:
        """Everything the reports show, read in one go under the lock (stats.py formats it)."""
        idle = len(self._idle)
        c: dict[str, Any] = {
            "size": self._nconns, "idle": idle, "in_use": self._nconns - idle, "waiting": len(self._waiting),
            "growing": self._growing, "min_size": self.min_size, "max_size": self.max_size,
            "borrows": self._borrows, "waits": self._waits, "timeouts": self._timeouts, "rejected": self._rejected,
            "created": self._created, "closed": self._closed_count, "create_errors": self._create_errors,
            "discarded_broken": self._discarded_broken, "check_failed": self._check_failed,
            "reset_failed": self._reset_failed, "expired": self._expired, "idle_closed": self._idle_closed,
            "housekeeper_runs": self._housekeeper_runs, "last_error": self._last_error,
            "config_error": self._connector.config_error, "config_errors": self._config_errors,
            "pool_closed": self._closed, "wait_sum": self._wait_sum, "usage_sum": self._usage_sum,
            "connect_sum": self._connect_sum, "returns_bad": self._returns_bad,
            "attempts_started": self._attempts_started,
        }  # fmt: skip
        if self.burst_size is not None:
            c["burst_size"], c["bursting"] = self.burst_size, self._housekeeper.bursting
        if not self._fifo_only:
            c["tenants"] = self._tenants.stats()
        return c

    def stats(self) -> dict[str, Any]:
        """A flat dict of counts, counters and recent wait/hold percentiles (ms)."""
        with self._lock:
            c = self._counts_locked()
        d = stats.pool_stats(self.name, os.getpid(), c, self._wait_window, self._hold_window)
        leaks = self._leaks
        extra = [leaks.thread if leaks is not None else None, self._futures.thread]
        d["threads"] = sum(t is not None and t.is_alive() for t in [*self._threads, *extra])
        if leaks is not None:
            d.update(leaks.stats())  # the detector's own counters, under its own lock
        return d

    # psycopg_pool's names for the same facts: get_stats() and pop_stats().
    def get_stats(self) -> dict[str, int]:
        """psycopg_pool's stats: the counters since the last ``pop_stats()``, and the sizes now."""
        with self._lock:
            c = self._counts_locked()
            base = self._stats_base
        return stats.psycopg_view(stats.psycopg_counters(c), base, stats.psycopg_measures(c))

    def pop_stats(self) -> dict[str, int]:
        """As ``get_stats()``, and start the counters again from zero (``stats()`` and the
        Prometheus counters keep their totals)."""
        with self._lock:
            c = self._counts_locked()
            counters = stats.psycopg_counters(c)
            base, self._stats_base = self._stats_base, counters
        return stats.psycopg_view(counters, base, stats.psycopg_measures(c))

    def advise(
        self, workers: int = 1, server_cores: int | None = None, spindles: int = 1, query_server: bool = True
    ) -> dict[str, Any]:
        """A recommended max_size with its reasoning (advisor.py). ``workers``: processes that
        each run such a pool against this server; ``query_server``: ask its max_connections."""
        now = self._clock()
        with self._lock:
            # every borrow attempt, served or not: timeouts and refusals are demand too
            timeouts = self._timeouts + self._rejected + self._config_errors
            measured = advisor.Measured(
                now, [x for x in self._demand_samples if x[0] >= now - 60.0], self._borrows + timeouts, timeouts,
                self._opened_at, self._hold_window.mean(), self._wait_window.percentiles_ms(99)[0], self.max_size,
                self._target,
            )  # fmt: skip
        ask = query_server and self._connector.driver.name == "psycopg" and not self._closed
        facts = self._server_facts.read(self.connection if ask else None, self.name, self.redact)
        return advisor.advise(measured, workers=workers, server_cores=server_cores, spindles=spindles,
                              facts=facts).as_dict()  # fmt: skip

    def connect_attempts(self) -> list[float]:
        """Monotonic timestamps of the recent connection attempts (to see the backoff)."""
        with self._lock:
            return list(self._connect_attempts)

    def redact(self, text: str) -> str:
        """``text`` without this pool's passwords (any it has seen) or anything like a DSN's."""
        return self._connector.scrub(text)

    def __repr__(self) -> str:
        idle = len(self._idle)
        return (
            f"<ConnectionPool {self.name!r} {self._target} size={self._nconns} idle={idle} "
            f"in_use={self._nconns - idle} waiting={len(self._waiting)} closed={self._closed}>"
        )

    def leaks(self) -> list[dict[str, Any]]:
        """Current leak suspects (see the README); empty when leak detection is off."""
        return self._leaks.leaks() if self._leaks is not None else []

    def leak_reports(self) -> list[dict[str, Any]]:
        """The last 100 leak reports, including leaks since returned; oldest first."""
        return self._leaks.reports() if self._leaks is not None else []

    def borrowed(self) -> list[dict[str, Any]]:
        """One record per connection out now: thread, held for, borrow site, busy or escaped."""
        return describe_all(self.name, self._leased(), self._clock())

    def tenant_label(self, tenant: str) -> str:
        return tenant if tenant in self._tenants.limits else "other"

    check_connection = staticmethod(check_connection)  # psycopg_pool's: check=ConnectionPool.check_connection

    # -- fork ---------------------------------------------------------------------------------
    def _after_fork_child(self) -> None:
        """In a forked child: forget the parent's connections without touching their sockets,
        retire the handles borrowed before the fork, and start again (tenant counts too)."""
        inherited = list(self._all.values())
        for slot in inherited:
            h = slot.handle
            if h is not None:
                h._retire(PoolError(
                    f"connection was borrowed from pool {self.name!r} before os.fork(); it belongs to the parent"
                ))  # fmt: skip
        forking.abandon(self._connector.driver.name, [s.raw for s in inherited])
        self._connector.after_fork()
        self._housekeeper.after_fork()
        self._tenants.reset_in_use()
        self._forked_parent = False  # a master that forked before is a parent; this child is not
        self._init_state()
        if self._leaks is not None:
            self._leaks.after_fork()
        if self._opened and not self._closed:
            with self._lock:
                self._fill_locked()
            self._start_threads()

    def _before_fork(self) -> Callable[[], None] | None:
        """The lock, for the fork (no half-done critical section in the child); bounded."""
        lock = self._lock
        return lock.release if lock.acquire(timeout=FORK_LOCK_TIMEOUT) else None

    def _after_fork_parent(self) -> None:
        """In the parent after os.fork(): a pre-fork server's master must not keep idle backends
        that every worker inherits. Close them, and stop refilling to min_size here."""
        with self._lock:
            if self._closed or not self._opened or self._pid != os.getpid():
                return
            idle = self._drain_idle_locked()
            first = not self._forked_parent
            self._forked_parent = True
        for slot in idle:
            self._close_slot(slot)
        if first:
            logger.info("pool %r: closed %d idle connection(s) in the parent after os.fork() (its workers would "
                        "inherit them); from now on connections are opened on demand only in pid %d",
                        self.name, len(idle), os.getpid())  # fmt: skip
