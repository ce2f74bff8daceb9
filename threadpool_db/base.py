"""The pool's records and small helpers: a connection's record (Slot), a queued borrower
(Waiter), the tunables, and parameter checks."""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

from .errors import PoolError
from .redact import redact_conninfo

if TYPE_CHECKING:
    from .connection import PooledConnection

CHECKS = ("auto", "always", "never")
AUTO_CHECK_IDLE = 0.5  # seconds idle after which check="auto" validates on borrow
LIFETIME_JITTER = 0.05  # each connection lives up to 5% less than max_lifetime
BURST_WINDOW = 10.0  # seconds of recent borrows the burst decision looks at
BAD_RETURN_LOG_INTERVAL = 10.0  # seconds between two warnings about a returned open transaction
_ids = itertools.count(1)


class Slot:
    """One live connection and what the pool knows of it.

    Who guards what: ``raw``, ``id``, ``pid``, ``created``, ``settings`` and ``gen`` are set
    once (immutable after). Everything about the current borrow (``handle``, ``owner``,
    ``thread``, ``borrowed_at``, ``site``, ``report``, ``tenant``) and ``expires``,
    ``last_used``, ``burst`` are written under the pool lock. ``dirty`` and ``named`` belong to
    the borrower's thread while the connection is out (the pool reads them in putconn, on
    that same thread, before it takes the lock)."""

    __slots__ = (
        "raw", "id", "pid", "created", "expires", "last_used", "settings", "dirty", "gen",
        "handle", "borrowed_at", "owner", "thread", "site", "report", "tenant", "burst", "named",
    )  # fmt: skip

    def __init__(self, raw: Any, pid: int | None, created: float, expires: float, settings: tuple[Any, ...],
                 gen: int) -> None:  # fmt: skip
        self.raw = raw
        self.id = next(_ids)
        self.pid = pid
        self.created = self.last_used = created
        self.expires = expires
        self.settings = settings
        self.dirty = 0  # DIRTY / BROKEN flags from .connection
        self.gen = gen
        self.handle: PooledConnection | None = None
        self.borrowed_at = 0.0
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


class Waiter:
    """A borrower in the queue, with a condition of its own, so a returned connection wakes
    exactly the waiter it goes to (the oldest), and a woken waiter does not have to win the
    pool lock back.

    The condition is a one-shot one: ``signal``, a lock the waiter holds from birth, released
    once by whoever serves it (``wake``). That is all a Condition would do here, for a fifth
    of the cost: a waiter is woken at most once, since each waker first takes it out of the
    pool's queue under the pool lock. Notified, with the pool lock held, by ``_give_locked``
    and ``_dispatch_locked`` (a connection for it), ``close`` (the pool went away) and
    ``_create_one`` (the database refuses the configuration). The fields are written before
    the release, so a waiter that wakes sees them; a waiter that times out reads them again
    under the pool lock."""

    __slots__ = ("signal", "slot", "error", "tenant", "priority", "since", "owner", "thread", "site", "handle")

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
        self.handle: PooledConnection | None = None

    def wake(self, slot: Slot | None = None, error: PoolError | None = None,
             handle: PooledConnection | None = None) -> None:  # fmt: skip
        self.slot = slot
        self.error = error
        self.handle = handle
        self.signal.release()


def positive(name: str, value: Any, *, allow_zero: bool = True, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


UNLIMITED = 1 << 30  # a null pool's "max_size=0": no limit of ours


def check_sizes(min_size: Any, max_size: Any, *, null: bool = False) -> tuple[int, int]:
    """Validate a (min_size, max_size) pair as psycopg_pool does: max_size None means min_size,
    so ``min_size=0`` needs a max_size. A null pool has min_size 0, and max_size 0 (or None)
    means no limit (returned as UNLIMITED)."""
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ValueError(f"min_size must be an int >= 0, got {min_size!r}")
    if null:
        if min_size != 0:
            raise ValueError(f"a null pool keeps no idle connections: min_size must be 0, got {min_size!r}")
        if max_size is None or max_size == 0:
            return 0, UNLIMITED
    if max_size is None:
        if min_size == 0:
            raise ValueError("max_size must be given when min_size is 0 (max_size None means min_size, and a pool "
                             "of 0 connections could never lend one)")  # fmt: skip
        max_size = min_size
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
    if max_size < min_size:
        raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size})")
    return min_size, max_size


def describe_target(conninfo: Any, kwargs: dict[str, Any] | None) -> str:
    """host:port/dbname for messages, never the password."""
    if callable(conninfo) or conninfo is None:
        return "(callable conninfo)" if callable(conninfo) else "(connect factory)"
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(conninfo, **(kwargs or {}))
        host = d.get("host") or d.get("hostaddr") or "localhost"
        # A field may itself hold a DSN pasted in the wrong place (host="postgresql://u:pw@h"):
        # the description goes through redaction too.
        return redact_conninfo(f"{host}:{d.get('port') or 5432}/{d.get('dbname') or d.get('user') or ''}")
    except Exception:
        return redact_conninfo(str(conninfo))
