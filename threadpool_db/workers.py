"""The pool's background threads: connection creators and the housekeeper.

Both hold only weak references to the pool's methods they run, so a pool that is dropped
without ``close()`` is still collected, and its threads end: the pool's ``__del__`` sets the
stop event and queues one sentinel per creator.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable

logger = logging.getLogger("threadpool_db")

CREATE = "create"


class TaskQueue:
    """Work for the creator threads; ``None`` tells one of them to stop."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.put = self._q.put
        self.get = self._q.get

    def shutdown(self, n: int) -> None:
        for _ in range(n):
            self._q.put(None)


def _creator(create: weakref.WeakMethod[Callable[[], None]], name: str, tasks: TaskQueue) -> None:
    while True:
        task = tasks.get()
        if task is None:
            return
        fn = create()
        if fn is None:  # the pool was collected
            return
        try:
            fn()
        except Exception:  # never let a worker die: the pool would stop growing
            logger.exception("pool %r: unexpected error in a creator thread", name)
        del fn


def _housekeeper(tick: weakref.WeakMethod[Callable[[], float]], name: str, stop: threading.Event,
                 nudge: threading.Event) -> None:  # fmt: skip
    delay = 0.05
    while True:
        # Until the next deadline, or a nudge (set by the pool when deadlines change, and by
        # close() after stop): cleared before the round, whose fresh view covers what it said.
        nudge.wait(delay)
        if stop.is_set():
            return
        nudge.clear()
        fn = tick()
        if fn is None:
            return
        try:
            delay = fn()
        except Exception:
            logger.exception("pool %r: unexpected error in the housekeeper", name)
            delay = 1.0
        del fn


def start(name: str, create: Callable[[], None], tick: Callable[[], float], tasks: TaskQueue,
          stop: threading.Event, n: int, nudge: threading.Event) -> list[threading.Thread]:  # fmt: skip
    """``n`` creator threads running ``create()`` per task, and one housekeeper running
    ``tick()`` (which returns the delay until its next run; ``nudge`` runs it earlier). Both get
    bound methods of the pool and hold them weakly."""
    creator = weakref.WeakMethod(create)  # type: ignore[arg-type]
    threads = [
        threading.Thread(target=_creator, args=(creator, name, tasks), name=f"{name}-creator-{i}", daemon=True)
        for i in range(n)
    ]
    threads.append(threading.Thread(target=_housekeeper, args=(weakref.WeakMethod(tick), name, stop, nudge),
                                    name=f"{name}-housekeeper", daemon=True))  # fmt: skip
    for t in threads:
        t.start()
    return threads
