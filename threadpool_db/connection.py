"""The handle a borrower gets: a thin proxy that dies when the connection goes back.

Everything the driver's connection offers is reachable through it (``__getattr__``); the few
calls on every request path (``execute``, ``cursor``, ``commit``, ``rollback``) are forwarded
without that lookup. Setting ``autocommit``, ``isolation_level``, ``read_only`` or ``deferrable``
marks the connection so the pool restores its defaults on return; touching ``.raw`` does too,
since the pool can no longer see what is done with it.

Used as a context manager the handle commits on a clean exit, rolls back on an exception, and
always goes back to its pool. ``close()`` also gives it back, as in SQLAlchemy and DBUtils.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import PoolError
from .guard import Guarded, taken_at, wrap

DIRTY = 1  # Slot.dirty flag: a session setting was changed through the handle
BROKEN = 2  # Slot.dirty flag: a fatal error was seen, never reuse

if TYPE_CHECKING:
    from .base import Slot
    from .pool import ConnectionPool

_SETTINGS = ("autocommit", "isolation_level", "read_only", "deferrable")


def dead_handle_error(conn: PooledConnection, pool_name: str | None, prefix: str = "") -> PoolError:
    """The error for using (or returning) a handle that is no longer borrowed: why it died
    when it did not simply go back (reclaimed, forked), else that it was returned."""
    gone = conn.died
    if isinstance(gone, PoolError):
        return type(gone)(prefix + str(gone))
    if pool_name is None:
        return PoolError(f"{prefix}connection was returned to a pool that no longer exists; it cannot be used again")
    return PoolError(f"{prefix}connection was already returned to pool {pool_name!r}{conn._sites()}; "
                     "it cannot be used or returned again")  # fmt: skip


def _setting(name: str) -> property:
    """A session setting: reads pass through, writes mark the connection for restore."""

    def fget(self: PooledConnection) -> Any:
        raw = self._raw
        if raw is None:
            raise self._dead()
        return getattr(raw, name)

    def fset(self: PooledConnection, value: Any) -> None:
        raw = self._raw
        if raw is None:
            raise self._dead()
        self._slot.dirty |= DIRTY  # type: ignore[union-attr]
        setattr(raw, name, value)

    return property(fget, fset, doc=f"The connection's {name}; restored to the pool default on return.")


def _guarded(name: str) -> Callable[..., Any]:
    """The connection's ``name`` method, whose result (a context manager) dies with the handle."""

    def call(self: PooledConnection, *args: Any, **kwargs: Any) -> Any:
        raw = self._raw
        if raw is None:
            raise self._dead()
        return Guarded(getattr(raw, name)(*args, **kwargs), self, name, taken_at())

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"As the connection's ``{name}``; what it returns dies with this handle."
    return call


class PooledConnection:
    """Made only by the pool (ConnectionPool._finish_borrow_locked, which sets ``_pool``,
    ``_slot`` and ``_raw`` with no __init__ call: it is on every borrow)."""

    __slots__ = ("_raw", "_slot", "_pool", "_borrowed_at", "_returned_at", "_died", "_close_pending")
    # While alive: the pool. Once retired: a weak reference to it, so a handle kept after its
    # return does not keep a dropped pool (and its connections) alive.
    _pool: ConnectionPool | weakref.ReferenceType[ConnectionPool]
    # While alive: the pool's record of the connection, and the driver's connection; both None
    # once dead.
    _slot: Slot | None
    _raw: Any
    # Set only when the handle dies, never on a borrow. _died: why, when it did not simply go
    # back (the error of a reclaim or a fork). _borrowed_at and _returned_at: the leaks.Site
    # of the borrow and of the return (None when leak detection is off), so what outlives the
    # handle can say where it was borrowed and where it went back.
    _died: PoolError | None
    _borrowed_at: Any
    _returned_at: Any
    # Set by close(): the pool accepts one putconn of this handle afterwards, quietly (the
    # psycopg_pool pattern conn.close(); pool.putconn(conn)). Read and cleared under the pool lock.
    _close_pending: bool

    # -- what it passes for ----------------------------------------------------------------------
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """While borrowed, the driver connection's class (psycopg.Connection, the pool's
        connection_class): ``isinstance(conn, psycopg.Connection)`` holds, so psycopg's own
        functions (TypeInfo.fetch, register_hstore, register_enum, register_composite) and
        adapter libraries that check the type accept the handle. ``type(conn)`` is still
        PooledConnection, and ``isinstance(conn, PooledConnection)`` holds too. Once returned
        the handle is only a PooledConnection."""
        raw = self._raw
        return PooledConnection if raw is None else type(raw)

    # -- liveness -----------------------------------------------------------------------------
    def _retire(self, reason: PoolError | None) -> None:
        """The pool takes the connection back (return, reclaim, fork). Called by the pool with
        its lock held; afterwards every use of the handle raises."""
        pool = self._pool
        self._raw = None
        self._slot = None
        self._died = reason
        if not isinstance(pool, weakref.ref):
            self._pool = weakref.ref(pool)

    def _owner(self) -> ConnectionPool | None:
        pool = self._pool
        return pool() if isinstance(pool, weakref.ref) else pool

    def _dead(self) -> PoolError:
        pool = self._owner()
        return dead_handle_error(self, pool.name if pool is not None else None)

    @property
    def died(self) -> PoolError | None:
        """Why this handle died when it did not simply go back (reclaimed, forked), else None."""
        try:  # the slot itself: an unset one must not fall through to __getattr__
            return PooledConnection._died.__get__(self)  # type: ignore[attr-defined,no-any-return]
        except AttributeError:
            return None

    @property
    def _borrow_site(self) -> str | None:
        return self._site_of(PooledConnection._borrowed_at)  # type: ignore[attr-defined]

    @property
    def _return_site(self) -> str | None:
        return self._site_of(PooledConnection._returned_at)  # type: ignore[attr-defined]

    def _site_of(self, field: Any) -> str | None:
        try:  # read the slot itself: an unset one must not fall through to __getattr__
            site = field.__get__(self)
        except AttributeError:
            return None
        from .leaks import where

        return where(site[0], site[1]) if site else None

    def _sites(self) -> str:
        """What is known of where it was borrowed and returned, as " (borrowed at f:l, returned
        at f:l)", or "" (leak detection off)."""
        known = [f"{what} at {at}" for what, at in (("borrowed", self._borrow_site), ("returned", self._return_site))
                 if at]  # fmt: skip
        return f" ({', '.join(known)})" if known else ""

    @property
    def raw(self) -> Any:
        """The driver's own connection, unguarded on purpose (the escape hatch): what you take
        from it is not invalidated on return, as what you take through the handle is. The pool
        restores its settings on return."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        self._slot.dirty |= DIRTY  # type: ignore[union-attr]
        return raw

    @property
    def returned(self) -> bool:
        """True once the connection went back to the pool (or was reclaimed)."""
        return self._raw is None

    # -- the calls on the hot path ------------------------------------------------------------
    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """As the connection's ``execute``; the cursor it returns dies with this handle."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        return Guarded(raw.execute(*args, **kwargs), self, "cursor", taken_at())

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """As the connection's ``cursor``; the cursor dies with this handle, and a named
        (server-side) one is closed on the server when the handle goes back."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        cur = raw.cursor(*args, **kwargs)
        if args or kwargs.get("name"):  # a name: a server-side cursor to close on return
            slot = self._slot
            if slot.named is None:  # type: ignore[union-attr]
                slot.named = []  # type: ignore[union-attr]
            slot.named.append(cur)  # type: ignore[union-attr]
        return Guarded(cur, self, "cursor", taken_at())

    transaction = _guarded("transaction")
    pipeline = _guarded("pipeline")

    def notifies(self, *args: Any, **kwargs: Any) -> Any:
        raw = self._raw
        if raw is None:
            raise self._dead()
        return wrap(raw.notifies(*args, **kwargs), self, taken_at())

    def commit(self) -> None:
        raw = self._raw
        if raw is None:
            raise self._dead()
        raw.commit()

    def rollback(self) -> None:
        raw = self._raw
        if raw is None:
            raise self._dead()
        raw.rollback()

    def close(self) -> None:
        """Give the connection back to its pool (it is not closed). A second call is a no-op,
        ``closed`` reads True after it, and one ``pool.putconn()`` of this handle afterwards is
        accepted quietly, as psycopg_pool code writes it (a second one raises)."""
        if self._raw is not None:
            self._close_pending = True
            self._pool.putconn(self)  # type: ignore[union-attr]  # alive: _pool is the pool

    @property
    def closed(self) -> bool:
        """The connection's ``closed`` while borrowed; True once the handle went back."""
        raw = self._raw
        return True if raw is None else bool(raw.closed)

    def _take_close_pending(self) -> bool:
        """Was this handle given back by close(), with no putconn of it since? Clears it (the
        pool calls this under its lock, so two racing putconns cannot both be forgiven)."""
        try:  # read the slot itself: an unset one must not fall through to __getattr__
            pending = PooledConnection._close_pending.__get__(self)  # type: ignore[attr-defined]
        except AttributeError:
            return False
        self._close_pending = False
        return bool(pending)

    # -- everything else ----------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        raw = self._raw
        if raw is None:
            raise self._dead()
        if name.startswith("set_") and name[4:] in _SETTINGS:
            self._slot.dirty |= DIRTY  # type: ignore[union-attr]
        return getattr(raw, name)

    autocommit = _setting("autocommit")
    isolation_level = _setting("isolation_level")
    read_only = _setting("read_only")
    deferrable = _setting("deferrable")

    def __enter__(self) -> PooledConnection:
        if self._raw is None:
            raise self._dead()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._raw is not None:  # else: given back inside the block, or reclaimed
            self._pool.release(self, ev, commit=et is None)  # type: ignore[union-attr]

    def __repr__(self) -> str:
        slot = self._slot
        state = f"conn={slot.id} pid={slot.pid}" if self._raw is not None else "returned"  # type: ignore[union-attr]
        pool = self._owner()
        return f"<PooledConnection pool={pool.name if pool is not None else '?'!r} {state}>"
