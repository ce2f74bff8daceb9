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
    """The three things the notifier asks of its pool (ConnectionPool is one)."""

    name: str

    def hand_out(self, slot: Slot, since: float, thread: threading.Thread, site: Any) -> Any:
        """Finish the borrow granted to a future waiter: its handle."""
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


class Notifier:
    """The thread that resolves futures and times them out."""

    def __init__(self, pool: Granter, clock: Callable[[], float]) -> None:
        self._clock = clock  # the pool's: deadlines are on it
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ref = weakref.ref(pool)
        self._deadlines: list[tuple[float, int, FutureWaiter]] = []
        self.thread = threading.Thread(target=self._run, name=f"{pool.name}-futures", daemon=True)
        self.thread.start()

    def watch(self, w: FutureWaiter) -> None:
        self.queue.put(("watch", w))

    def stop(self) -> None:
        self.queue.put(None)

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
        handle = pool.hand_out(w.slot, w.since, w.thread, w.site)
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
