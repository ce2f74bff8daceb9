"""The pool's records: one connection (Slot) and one queued borrower (Waiter, and the Queued
shape every waiter has). Plain data: each field says who guards it; the paths that change
them live in pool.py."""

from __future__ import annotations

import itertools
import threading
from typing import Any, Protocol

from .errors import PoolError

_ids = itertools.count(1)

# Slot.return_flags: what the return must do beyond the rollback, set through the handle
DIRTY = 1  # a session setting was changed: restore the pool's defaults
BROKEN = 2  # a fatal error was seen: never reuse
NAMED = 4  # server-side cursors were opened (Slot.named): close them on return
ADAPTERS = 8  # the borrower reached conn.adapters (or .raw): give back the map connect made
HANDLERS = 16  # notify/notice handlers were added through the handle (Slot.handlers): remove them


class Slot:
    """One live connection and what the pool knows of it.

    Who guards what: ``raw``, ``id``, ``pid``, ``created``, ``settings`` and ``gen`` are set
    once (immutable after). Everything about the current borrow (``handle``, ``owner``,
    ``thread``, ``borrowed_at``, ``site``, ``report``, ``tenant``) and ``expires``,
    ``last_used``, ``check_at``, ``burst`` are written under the pool lock. ``return_flags`` and ``named`` belong to
    the borrower's thread while the connection is out (the pool reads them in putconn, on
    that same thread, before it takes the lock)."""

    __slots__ = (
        "raw", "id", "pid", "created", "expires", "last_used", "check_at", "settings", "return_flags", "gen",
        "handle", "borrowed_at", "owner", "thread", "site", "report", "tenant", "burst", "named", "handlers",
        "context", "shared",
    )  # fmt: skip

    def __init__(self, raw: Any, pid: int | None, created: float, expires: float, settings: tuple[Any, ...],
                 gen: int) -> None:  # fmt: skip
        self.raw = raw
        self.id = next(_ids)
        self.pid = pid
        self.created = self.last_used = created
        # a borrow after this time validates it first: the pool sets it whenever the connection
        # comes to rest (ConnectionPool._rest_locked), from its check rule
        self.check_at = created
        self.expires = expires
        self.settings = settings
        self.return_flags = 0  # DIRTY | BROKEN | NAMED | ADAPTERS | HANDLERS: what the return must do
        self.gen = gen
        self.handle: Any = None  # the borrower's connection.PooledConnection while it is out
        self.borrowed_at = 0.0  # when (the pool's clock)
        self.owner = 0  # ident of the borrowing thread
        # the borrowing thread itself, when leak detection is on: its name outlives it, so a
        # report of a thread that ended still names it
        self.thread: threading.Thread | None = None
        # where it was borrowed, when leak detection is on: leaks.Site, (code, lasti, frame id,
        # the whole stack when captured, else None)
        self.site: Any = None
        self.report: dict[str, Any] | None = None  # the leak report made of this borrow, if any
        self.tenant: str | None = None  # the tenant it is lent to (quota accounting)
        self.burst = False  # made above max_size during a burst: short-lived, closed first
        self.named: list[Any] | None = None  # server-side cursors of the current borrow
        # (name of the remover, callback) of each notify/notice handler the borrow added
        self.handlers: list[tuple[str, Any]] | None = None
        # A framework's word on the current borrow (threadpool_db.django sets both after its
        # borrow and clears them before its return, on the borrower's thread): ``context``, what
        # the borrow was for ("GET /orders"), shown in leak reports; ``shared``, lent to other
        # threads on purpose, so its thread's end is not a leak.
        self.context: str | None = None
        self.shared = False


class Queued(Protocol):
    """What the pool needs of any queued borrower (a Waiter, a future.FutureWaiter): who it is
    for the scheduler and the stats, and ``wake``, which the pool calls under its lock to
    serve it (a slot, and the handle when the granter could finish the borrow) or fail it."""

    tenant: str | None
    priority: float
    since: float  # when it started waiting (the pool's clock)
    slot: Slot | None
    error: PoolError | None

    def wake(self, slot: Slot | None = None, error: PoolError | None = None, handle: Any = None) -> None: ...


class Waiter:
    """A borrower in the queue, with a condition of its own, so a returned connection wakes
    exactly the waiter it goes to (the oldest), and a woken waiter does not have to win the
    pool lock back.

    The condition is a one-shot one: ``signal``, a lock the waiter holds from birth, released
    once by whoever serves it (``wake``). That is all a Condition would do here, for a fifth
    of the cost: a waiter is woken at most once, since each waker first takes it out of the
    pool's queue under the pool lock. Notified, with the pool lock held, by the pool's
    ``_hand_over_locked`` and ``_dispatch_locked`` (a connection for it), ``close`` (the pool
    went away) and ``attempt_failed`` (the database refuses the configuration). The fields are
    written before the release, so a waiter that wakes sees them; a waiter that times out reads
    them again under the pool lock."""

    __slots__ = ("signal", "slot", "error", "tenant", "priority", "since", "owner", "thread", "site", "handle",
                 "counted")  # fmt: skip

    def __init__(self, tenant: str | None = None, priority: float = 0.0, since: float = 0.0, owner: int = 0,
                 site: Any = None, thread: threading.Thread | None = None) -> None:  # fmt: skip
        self.signal = threading.Lock()
        self.signal.acquire()  # released by wake(): see the class docstring
        self.slot: Slot | None = None
        self.error: PoolError | None = None
        self.tenant = tenant
        self.priority = priority
        self.since = since
        # who waits, and from where: the granter finishes the borrow for it under the lock it
        # holds anyway (handle), so a woken waiter need not take the pool lock again
        self.owner = owner
        self.thread = thread
        self.site = site
        self.handle: Any = None
        # Its wait counts in the stats (requests_wait_ms): False for a null pool's borrower that
        # a connection made for it serves (psycopg_pool's connects in the borrower's thread,
        # unqueued). Written by the pool under its lock, at admission.
        self.counted = True

    def wake(self, slot: Slot | None = None, error: PoolError | None = None, handle: Any = None) -> None:
        self.slot = slot
        self.error = error
        self.handle = handle
        self.signal.release()
