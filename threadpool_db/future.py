"""Borrowing through a ``concurrent.futures.Future``, in the same fair queue as ``getconn``.

A future waiter sits in the pool's queue like any other. Grants happen under the pool lock, so
they are handed to a small notifier thread (one per pool, made on first use) that resolves the
future outside the lock: done-callbacks never run under it. The notifier also fails futures
whose timeout passes.

Cancelling a future before it is granted takes it out of the queue; if it was granted in the
meantime, the notifier finds it cancelled and gives the connection straight back. Either way
no slot is lost. A future that completed holds a connection: give it back with ``putconn``.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any, Protocol

from .errors import PoolError, PoolTimeout

if TYPE_CHECKING:
    from .records import Slot


class Granter(Protocol):
    """What future borrowing asks of its pool (ConnectionPool is one)."""

    name: str
    timeout: float

    def admit(self, w: Any, tenant: str | None, priority: float | None) -> Slot | None:
        """Serve ``w`` at once (a slot, validated when due) or queue it (None); raises as a
        borrow that cannot wait would (closed, too many waiters, a configuration error)."""
        ...

    def hand_out(self, slot: Slot, since: float, thread: threading.Thread, site: Any, checked: bool = False) -> Any:
        """Finish the borrow granted to a future waiter: its handle; None when the connection
        failed the check due before a borrow (skipped when ``checked``: admit did it), and was
        discarded."""
        ...

    def cancel_waiter(self, w: Any) -> None:
        """A cancelled future's waiter leaves the queue, unless it was served already."""
        ...

    def expire_waiter(self, w: Any) -> str | None:
        """Take a waiter whose deadline passed out of the queue: the timeout message, or None
        when it was served meanwhile."""
        ...

    def putconn(self, conn: Any) -> None: ...


_seq = itertools.count()


class FutureWaiter:
    """Looks like a pool waiter (tenant, priority, since, wake) but resolves a Future."""

    __slots__ = ("future", "deadline", "timeout", "tenant", "priority", "since", "slot", "error", "thread", "notify",
                 "site")  # fmt: skip

    def __init__(self, future: Future[Any], deadline: float, timeout: float, tenant: str | None, priority: float,
                 notify: queue.SimpleQueue[Any], site: Any = None,
                 since: float = 0.0) -> None:  # fmt: skip
        self.future = future
        self.deadline = deadline
        self.timeout = timeout
        self.tenant = tenant
        self.priority = priority
        self.since = since  # on the pool's clock
        self.slot: Slot | None = None
        self.error: PoolError | None = None
        self.thread = threading.current_thread()  # the requester: leak reports name it
        self.notify = notify
        self.site = site  # where the requester borrowed (leaks.Site), for the leak detector

    def wake(self, slot: Slot | None = None, error: PoolError | None = None, handle: Any = None) -> None:
        # called with the pool lock held: only record and pass on
        self.slot, self.error = slot, error
        self.notify.put(self)


class Futures:
    """One pool's future borrows: the requests, and the notifier thread, started with the
    first one that has to wait (a pool that never waits through a future runs no thread)."""

    def __init__(self, pool: Granter, clock: Callable[[], float]) -> None:
        self._ref = weakref.ref(pool)  # the pool holds this object: no cycle
        self._clock = clock  # the pool's: deadlines are on it
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # grants, errors, watches, None: stop
        self._lock = threading.Lock()  # guards _notifier and _stopped (never the pool's lock)
        self._notifier: Notifier | None = None
        self._stopped = False

    @property
    def thread(self) -> threading.Thread | None:
        notifier = self._notifier  # a reference read: atomic
        return notifier.thread if notifier is not None else None

    def borrow(self, timeout: float | None, tenant: str | None, priority: float | None, site: Any) -> Future[Any]:
        pool = self._ref()
        assert pool is not None  # called by the pool itself
        t0 = self._clock()
        if timeout is None:
            timeout = pool.timeout
        elif not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        fut: Future[Any] = Future()
        w = FutureWaiter(fut, t0 + timeout, timeout, tenant, float(priority or 0.0), self.queue, site, t0)
        slot = pool.admit(w, tenant, priority)
        if slot is not None:
            fut.set_running_or_notify_cancel()
            fut.set_result(pool.hand_out(slot, t0, threading.current_thread(), site, checked=True))
            return fut
        self.queue.put(("watch", w))
        self._start()
        fut.add_done_callback(lambda f: pool.cancel_waiter(w) if f.cancelled() else None)
        return fut

    def _start(self) -> None:
        with self._lock:  # a thread start under the pool's lock would hold up every borrower
            if self._notifier is None:
                self._notifier = Notifier(self._ref, self._clock, self.queue)
                if self._stopped:  # the pool closed since this borrow queued: end after its wake-up
                    self.queue.put(None)

    def stop(self) -> None:
        """After the pool's last wake-ups (close() queues them first): the thread ends."""
        with self._lock:
            self._stopped = True
            if self._notifier is not None:
                self.queue.put(None)


class Notifier:
    """The thread that resolves futures and times them out (its queue: Futures.queue)."""

    def __init__(self, ref: weakref.ReferenceType[Granter], clock: Callable[[], float],
                 work: queue.SimpleQueue[Any]) -> None:  # fmt: skip
        self._clock = clock
        self.queue = work
        self._ref = ref
        self._deadlines: list[tuple[float, int, FutureWaiter]] = []  # only this thread touches it
        pool = ref()
        name = pool.name if pool is not None else "?"
        self.thread = threading.Thread(target=self._run, name=f"{name}-futures", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            timeout = None
            if self._deadlines:
                timeout = max(0.0, self._deadlines[0][0] - self._clock())
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = "tick"
            if item is None:
                return
            pool = self._ref()
            if pool is None:
                return
            if isinstance(item, tuple):  # ("watch", waiter): remember its deadline
                w = item[1]
                heapq.heappush(self._deadlines, (w.deadline, next(_seq), w))
            elif isinstance(item, FutureWaiter):
                self._resolve(pool, item)
            self._expire(pool)
            del pool

    def _resolve(self, pool: Granter, w: FutureWaiter) -> None:
        if w.error is not None:
            _set(w.future, exc=w.error)
            return
        assert w.slot is not None
        slot, checked = w.slot, False
        while (handle := pool.hand_out(slot, w.since, w.thread, w.site, checked)) is None:
            # The granted connection failed its check and is gone: queue again, as getconn
            # does (served at once by a connection admit checked, or by a later grant).
            w.slot = None
            if w.future.cancelled():
                return
            try:
                got = pool.admit(w, w.tenant, w.priority)
            except PoolError as e:
                _set(w.future, exc=e)
                return
            if got is None:
                return  # queued: its watch (the deadline) is still on the heap
            slot, checked = got, True
        if not _set(w.future, result=handle):  # cancelled after the grant: give it back
            try:
                pool.putconn(handle)
            except PoolError:
                pass

    def _expire(self, pool: Granter) -> None:
        now = self._clock()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, w = heapq.heappop(self._deadlines)
            msg = pool.expire_waiter(w)
            if msg is not None:
                _set(w.future, exc=PoolTimeout(msg))


def _set(fut: Future[Any], result: Any = None, exc: BaseException | None = None) -> bool:
    """Complete a future unless it was cancelled; False if it was."""
    if not fut.set_running_or_notify_cancel():
        return False
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except InvalidStateError:
        return False
    return True
