"""The pool's background threads: connection creators and the housekeeper.

Both hold only a weak reference to their pool, so a pool that is dropped without ``close()``
is still collected, and its threads end: the pool's ``__del__`` sets the stop event and queues
one sentinel per creator.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import ConnectionPool

logger = logging.getLogger("threadpool_db")

CREATE = "create"
BACKOFF_START = 0.1  # first retry after a failed connect (seconds, ±25% jitter)
BACKOFF_MAX = 1.0  # ceiling of the exponential backoff: recovery within ~1 s of the server
BACKOFF_MAX_CONFIG = 10.0  # ceiling while the server refuses our configuration (bad password …)


class TaskQueue:
    """Work for the creator threads; ``None`` tells one of them to stop."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.put = self._q.put
        self.get = self._q.get

    def shutdown(self, n: int) -> None:
        for _ in range(n):
            self._q.put(None)


def _creator(ref: weakref.ReferenceType[ConnectionPool], tasks: TaskQueue) -> None:
    while True:
        task = tasks.get()
        if task is None:
            return
        pool = ref()
        if pool is None:
            return
        try:
            pool._create_one()
        except Exception:  # never let a worker die: the pool would stop growing
            logger.exception("pool %r: unexpected error in a creator thread", pool.name)
        del pool


def _housekeeper(ref: weakref.ReferenceType[ConnectionPool], stop: threading.Event) -> None:
    delay = 0.05
    while not stop.wait(delay):
        pool = ref()
        if pool is None:
            return
        try:
            delay = pool._housekeep()
        except Exception:
            logger.exception("pool %r: unexpected error in the housekeeper", pool.name)
            delay = 1.0
        del pool


def start(pool: ConnectionPool, tasks: TaskQueue, stop: threading.Event, n: int) -> list[threading.Thread]:
    ref = weakref.ref(pool)
    threads = [
        threading.Thread(target=_creator, args=(ref, tasks), name=f"{pool.name}-creator-{i}", daemon=True)
        for i in range(n)
    ]
    threads.append(
        threading.Thread(target=_housekeeper, args=(ref, stop), name=f"{pool.name}-housekeeper", daemon=True)
    )
    for t in threads:
        t.start()
    return threads
