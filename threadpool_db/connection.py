"""The handle a borrower gets, and what dies with it.

The handle (``PooledConnection``) is a thin proxy that dies when the connection goes back.
Everything the driver's connection offers is reachable through it (``__getattr__``); the few
calls on every request path (``execute``, ``cursor``, ``commit``, ``rollback``) are forwarded
without that lookup. Every attribute a ``psycopg.Connection`` takes writes of is a property
here (``autocommit`` ... ``deferrable``, ``row_factory``, ``cursor_factory``,
``server_cursor_factory``, ``prepare_threshold``, ``prepared_max``): a write marks the
connection so the pool restores what ``configure`` left on return; touching ``.raw`` or
``.adapters`` does too, and the notify/notice handlers added through the handle are removed.
Used as a context manager the handle commits on a clean exit, rolls back on an exception, and
always goes back to its pool. ``close()`` also gives it back, as in SQLAlchemy and DBUtils.

What a borrower takes through the handle dies with it too. On psycopg, cursors (of the
``cursor_factory`` / ``server_cursor_factory`` in use), transactions and pipelines are
psycopg's own classes, tied to the handle (``tied_class``): psycopg's checks (isinstance,
``next``, weak references, ``Rollback(tx)``, pipeline re-entry) hold, and their every use of the
connection checks the handle is still borrowed. With another DB-API driver they come wrapped
in ``Guarded``, which checks on every call. After the connection goes back (or is reclaimed),
any use raises ``ConnectionReturned`` (a ``psycopg.OperationalError``) naming the pool, where
the object was taken and, when the leak detector recorded them, where the connection was
borrowed and returned: a stale cursor can no longer write into the next borrower's
transaction. A borrow that takes no cursor pays nothing. ``conn.raw`` stays the unguarded
escape hatch.

The handle knows its pool only through ``Owner``, the two things it asks of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from . import commits
from .drivers import IDLE, PYTHON_SETTINGS
from .errors import BadReturn, ConnectionReturned, PoolError, ReturnedTwice
from .records import ADAPTERS, BROKEN, DIRTY, HANDLERS, NAMED

if TYPE_CHECKING:
    from .records import Slot


class Owner(Protocol):
    """What a handle asks of the pool it came from (ConnectionPool is one)."""

    name: str
    close_returns: bool  # what the handle's close() does: False, close it; True, give it back

    def putconn(self, conn: Any, exc: BaseException | None = None, commit: bool | None = None) -> None:
        """Give ``conn`` back; ``commit`` not None: the end of a ``with`` block (commit, or
        roll back, an open transaction; ``exc``, the block's exception, may mark it broken)."""
        ...


_SETTINGS = ("autocommit", "isolation_level", "read_only", "deferrable")
# The order of a driver's ``settings()`` tuple (a generic driver's has autocommit only).
SETTING_ORDER = _SETTINGS + PYTHON_SETTINGS


def writable_names() -> tuple[str, ...]:
    """The public attributes a ``psycopg.Connection`` takes writes of, read off its class: its
    properties with a setter and its annotated instance attributes (``row_factory``,
    ``cursor_factory``, ``server_cursor_factory``). The handle gets a property for each; the
    known ones are the fallback when psycopg is not there."""
    names = dict.fromkeys(_SETTINGS + PYTHON_SETTINGS)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return tuple(names)
    for klass in psycopg.Connection.__mro__:
        for name, value in vars(klass).items():
            if not name.startswith("_") and isinstance(value, property) and value.fset is not None:
                names[name] = None
        for name in vars(klass).get("__annotations__", {}):
            if not name.startswith("_"):
                names[name] = None
    return tuple(names)


def dead_handle_error(conn: PooledConnection, pool_name: str | None, prefix: str = "") -> ConnectionReturned:
    """The error for using (or returning) a handle that is no longer borrowed: why it died
    when it did not simply go back (reclaimed, forked), else that it was returned. Always a
    ConnectionReturned (a ``psycopg.OperationalError``)."""
    gone = conn.died
    if isinstance(gone, ConnectionReturned):
        return type(gone)(prefix + str(gone))
    if isinstance(gone, PoolError):  # e.g. retired by a fork
        return ConnectionReturned(prefix + str(gone))
    if pool_name is None:
        msg = f"{prefix}connection was returned to a pool that no longer exists; it cannot be used again"
        return ConnectionReturned(msg)
    return ConnectionReturned(f"{prefix}connection was already returned to pool {pool_name!r}{conn._sites()}; "
                              "it cannot be used or returned again")  # fmt: skip


def bad_return_error(conn: Any, pool: Owner) -> PoolError:
    """The error for a putconn that is not a return: a foreign connection (BadReturn), or a
    handle already returned (ReturnedTwice) or reclaimed (ConnectionReclaimed); the message
    says which, and where. The first two are ``ValueError``s, as psycopg_pool's are."""
    owner = conn._owner() if type(conn) is PooledConnection else None
    if owner is not pool:
        where = f"pool {owner.name!r}" if owner is not None else "outside any pool"
        return BadReturn(f"putconn: this connection does not belong to pool {pool.name!r} (it comes from {where})")
    err = dead_handle_error(conn, pool.name, "putconn: ")
    return ReturnedTwice(str(err)) if type(err) is ConnectionReturned else err


def check_connection(conn: Any) -> None:
    """psycopg_pool's check, usable as ``check=ConnectionPool.check_connection``: raise if the
    connection (a psycopg connection or our handle) cannot run an empty statement. It opens no
    transaction."""
    raw = conn.raw if type(conn) is PooledConnection else conn
    if raw.autocommit:
        raw.execute("")
    else:
        raw.autocommit = True
        try:
            raw.execute("")
        finally:
            raw.autocommit = False


def _setting(name: str) -> property:
    """A setting (session or Python-side): reads pass through, writes mark the connection for
    restore. A data descriptor, so only these names pay for it: the pool's own slot writes on
    every borrow and return go straight to their slots (no ``__setattr__``)."""

    def fget(self: PooledConnection) -> Any:
        raw = self._raw
        if raw is None:
            return self._setting_at_return(name)
        return getattr(raw, name)

    def fset(self: PooledConnection, value: Any) -> None:
        raw = self._raw
        if raw is None:
            raise self._dead()
        self._slot.return_flags |= DIRTY  # type: ignore[union-attr]
        setattr(raw, name, value)

    doc = f"The connection's {name}; restored to the pool default on return, and read as left once returned."
    return property(fget, fset, doc=doc)


class PooledConnection:
    """Made only by the pool (ConnectionPool._finish_borrow_locked, which sets ``_home``,
    ``_slot`` and ``_raw`` with no __init__ call: it is on every borrow)."""

    # ``__dict__``: attributes of the borrower's own (``conn.tag = ...``, a test's monkeypatch)
    # live on the handle, as on a psycopg connection; they never reach the connection, so the
    # next borrower cannot see them. The pool's slot writes do not go through it.
    __slots__ = ("_raw", "_slot", "_home", "_borrowed_from", "_returned_from", "_died", "_close_pending", "_seen",
                 "__dict__")  # fmt: skip
    # While alive: the pool. Once retired: a weak reference to it, so a handle kept after its
    # return does not keep a dropped pool (and its connections) alive. Written by the pool on
    # every borrow and return (and read by _sight.c's with-block by offset); ``_pool`` below is
    # what others read.
    _home: Owner | weakref.ReferenceType[Owner]
    # While alive: the pool's record of the connection, and the driver's connection; both None
    # once dead.
    _slot: Slot | None
    _raw: Any
    # Set only when the handle dies, never on a borrow. _died: why, when it did not simply go
    # back (the error of a reclaim or a fork). _borrowed_from and _returned_from: the leaks.Site
    # of the borrow and of the return (None when leak detection is off), so what outlives the
    # handle can say where it was borrowed and where it went back.
    _died: PoolError | None
    _borrowed_from: Any
    _returned_from: Any
    # Set by the return: the settings as the borrower left them (drivers' ``settings()`` order:
    # autocommit first), read by a dead handle as a closed psycopg connection reads its own.
    _seen: tuple[Any, ...] | None
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
        pool = self._home
        self._raw = None
        self._slot = None
        self._died = reason
        if not isinstance(pool, weakref.ref):
            self._home = weakref.ref(pool)

    def _owner(self) -> Owner | None:
        pool = self._home
        return pool() if isinstance(pool, weakref.ref) else pool

    @property
    def _pool(self) -> Owner | None:
        """psycopg_pool's attribute on a pooled connection (Django's backend returns through
        ``connection._pool.putconn(connection)``): the pool, or None once a returned handle's
        pool is gone. Never a weak reference."""
        pool = self._home
        return pool() if type(pool) is weakref.ReferenceType else pool

    def _dead(self) -> ConnectionReturned:
        pool = self._owner()
        return dead_handle_error(self, pool.name if pool is not None else None)

    def _setting_at_return(self, name: str) -> Any:
        """A returned handle reads a setting as the borrower left it (a closed psycopg
        connection reads its own so); a reclaimed or forked one raises why it died."""
        try:  # the slot itself: an unset one must not fall through to __getattr__
            seen = PooledConnection._seen.__get__(self)  # type: ignore[attr-defined]
        except AttributeError:
            seen = None
        at = SETTING_ORDER.index(name) if name in SETTING_ORDER else len(SETTING_ORDER)
        if seen is None or at >= len(seen):
            raise self._dead()
        return seen[at]

    @property
    def died(self) -> PoolError | None:
        """Why this handle died when it did not simply go back (reclaimed, forked), else None."""
        try:  # the slot itself: an unset one must not fall through to __getattr__
            return PooledConnection._died.__get__(self)  # type: ignore[attr-defined,no-any-return]
        except AttributeError:
            return None

    @property
    def _borrow_site(self) -> str | None:
        return self._site_of(PooledConnection._borrowed_from)  # type: ignore[attr-defined]

    @property
    def _return_site(self) -> str | None:
        return self._site_of(PooledConnection._returned_from)  # type: ignore[attr-defined]

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
        self._slot.return_flags |= DIRTY | ADAPTERS  # type: ignore[union-attr]
        return raw

    @property
    def adapters(self) -> Any:
        """The connection's adapters map (psycopg). What a borrower registers on it lasts until
        the return: the pool gives the connection back the map it had after ``connect`` and
        ``configure`` (register in ``configure`` for every connection, or on
        ``psycopg.adapters`` for every connection of the process)."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        self._slot.return_flags |= ADAPTERS  # type: ignore[union-attr]
        return raw.adapters

    @property
    def driver_connection(self) -> Any:
        """The driver's object, for a framework that manages it itself (FairQueuePool hands
        SQLAlchemy its connection records so): unlike ``raw``, reading it does not mark the
        connection for a settings restore on return."""
        raw = self._raw
        if raw is None:
            raise self._dead()
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
        if _is_psycopg(raw):
            binary = kwargs.pop("binary", False)
            cur = self._new_cursor(raw, "", binary, None, None, False, taken_at())
            return cur.execute(*args, **kwargs)
        return Guarded(raw.execute(*args, **kwargs), self, "cursor", taken_at())

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """As the connection's ``cursor``; the cursor dies with this handle, and a named
        (server-side) one is closed on the server when the handle goes back. On psycopg it is
        an instance of the cursor class in use (``cursor_factory``, ``server_cursor_factory``)."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        if _is_psycopg(raw):
            return self._psycopg_cursor(raw, taken_at(), *args, **kwargs)
        cur = raw.cursor(*args, **kwargs)
        if args or kwargs.get("name"):  # a name: a server-side cursor to close on return
            self._track_named(cur)
        return Guarded(cur, self, "cursor", taken_at())

    def _psycopg_cursor(self, raw: Any, where: str, name: str = "", *, binary: bool = False, row_factory: Any = None,
                        scrollable: bool | None = None, withhold: bool = False) -> Any:  # fmt: skip
        return self._new_cursor(raw, name, binary, row_factory, scrollable, withhold, where)

    def _new_cursor(self, raw: Any, name: str, binary: bool, row_factory: Any, scrollable: bool | None,
                    withhold: bool, where: str) -> Any:  # fmt: skip
        """psycopg's ``Connection.cursor``, made on this handle: the factory's class (tied, see
        ``tied_class``) is built with the handle as its connection."""
        raw._check_connection_ok()  # what psycopg's cursor() does first: a closed one raises
        if not row_factory:
            row_factory = raw.row_factory
        if name:
            cur = _build(raw.server_cursor_factory, where, self, name=name, row_factory=row_factory,
                         scrollable=scrollable, withhold=withhold)  # fmt: skip
            self._track_named(cur)
        else:
            cur = _build(raw.cursor_factory, where, self, row_factory=row_factory)
        if binary:
            cur.format = _BINARY
        return cur

    def _track_named(self, cur: Any) -> None:
        slot = self._slot
        if slot.named is None:  # type: ignore[union-attr]
            slot.named = []  # type: ignore[union-attr]
        slot.named.append(cur)  # type: ignore[union-attr]
        slot.return_flags |= NAMED  # type: ignore[union-attr]  # so the return looks at them

    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Any:
        """As the connection's ``transaction``: the Transaction (psycopg's class, so
        ``raise psycopg.Rollback(tx)`` works) dies with this handle."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        if _is_psycopg(raw):
            return _transaction(self, savepoint_name, force_rollback, taken_at())
        return Guarded(raw.transaction(savepoint_name, force_rollback), self, "transaction", taken_at())

    def pipeline(self) -> Any:
        """As the connection's ``pipeline``: re-entered, it gives the same Pipeline; it dies
        with this handle."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        if _is_psycopg(raw):
            return _pipeline(self, taken_at())
        return Guarded(raw.pipeline(), self, "pipeline", taken_at())

    def add_notify_handler(self, callback: Callable[[Any], None]) -> None:
        """As the connection's; the callback is removed when the connection goes back."""
        self._add_handler("add_notify_handler", "remove_notify_handler", callback)

    def add_notice_handler(self, callback: Callable[[Any], None]) -> None:
        """As the connection's; the callback is removed when the connection goes back."""
        self._add_handler("add_notice_handler", "remove_notice_handler", callback)

    def _add_handler(self, adder: str, remover: str, callback: Callable[[Any], None]) -> None:
        raw = self._raw
        if raw is None:
            raise self._dead()
        getattr(raw, adder)(callback)
        slot = self._slot
        if slot.handlers is None:  # type: ignore[union-attr]
            slot.handlers = []  # type: ignore[union-attr]
        slot.handlers.append((remover, callback))  # type: ignore[union-attr]
        slot.return_flags |= HANDLERS  # type: ignore[union-attr]  # so the return looks at them

    def notifies(self, *args: Any, **kwargs: Any) -> Any:
        raw = self._raw
        if raw is None:
            raise self._dead()
        return wrap(raw.notifies(*args, **kwargs), self, taken_at())

    def commit(self) -> None:
        """Commit; a connection lost while COMMIT was in flight raises CommitOutcomeUnknown
        (the transaction may or may not have been committed: see commits.py)."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        commits.commit(raw)

    def rollback(self) -> None:
        raw = self._raw
        if raw is None:
            raise self._dead()
        raw.rollback()

    def close(self) -> None:
        """As psycopg_pool's: with ``close_returns=False`` (the default) the connection is
        closed for real; with ``close_returns=True`` it goes back for reuse. Either way the
        borrow ends here and the slot goes back to the pool, so nothing leaks: a closed one is
        discarded (counted in ``returns_bad``, as psycopg_pool counts it) and replaced when
        needed. A second call is a no-op, ``closed`` reads True after it, and one
        ``pool.putconn()`` of this handle afterwards (or the ``with`` block's end) is accepted
        quietly, as psycopg_pool code writes it (a second one raises)."""
        slot = self._slot
        if slot is None:
            return
        pool = self._home
        if not pool.close_returns:  # type: ignore[union-attr]  # alive: _home is the pool
            # Broken, the return discards it without a reset and closes it through the
            # driver, in this call: the one place the pool closes a connection it lent.
            slot.return_flags |= BROKEN
        self._close_pending = True
        pool.putconn(self)  # type: ignore[union-attr]

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

    @property
    def pgconn(self) -> Any:
        """The libpq connection (psycopg). A property, not a ``__getattr__`` fall-through: a
        cursor's Transformer and Copy read it on every statement through ``cur.connection``."""
        raw = self._raw
        if raw is None:
            raise self._dead()
        return raw.pgconn

    # -- everything else ----------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        raw = self._raw
        if raw is None:
            raise self._dead()
        if (name.startswith("set_") and name[4:] in _SETTINGS) or name == "tpc_begin":
            self._slot.return_flags |= DIRTY  # type: ignore[union-attr]  # (a tpc left begun is ended on return)
        return getattr(raw, name)

    # The settings psycopg's connection takes writes of (autocommit ... deferrable, row_factory,
    # cursor_factory, server_cursor_factory, prepare_threshold, prepared_max): see below the
    # class. Any other name is the borrower's own and stays on the handle (``__dict__``), as it
    # would on a psycopg connection; it is never forwarded, so it cannot reach the next borrower.
    # A method replaced so (a test's monkeypatch of ``conn.rollback``) is what the pool calls to
    # roll back at the return, as psycopg_pool calls ``conn.rollback()`` (Connector.reset).

    # The with-block methods. These two are the reference (and the fallback); below the class,
    # the same two in C replace them when _sight.c was built.
    def __enter__(self) -> PooledConnection:
        if self._raw is None:
            raise self._dead()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._raw is not None:  # else: given back inside the block, or reclaimed
            # one call: the pool commits or rolls back and takes it back in the same frame
            self._home.putconn(self, ev, et is None)  # type: ignore[union-attr]

    def __repr__(self) -> str:
        """As psycopg's: the status (``[IDLE]``, ``[INTRANS]`` ...) and where it is connected
        (never a password); then the pool and the connection's id."""
        raw, slot = self._raw, self._slot
        pool = self._owner()
        name = pool.name if pool is not None else "?"
        if raw is None:
            return f"<PooledConnection [RETURNED] pool={name!r} at 0x{id(self):x}>"
        summary = _summary(raw)
        return f"<PooledConnection {summary}pool={name!r} conn={slot.id} pid={slot.pid} at 0x{id(self):x}>"  # type: ignore[union-attr]


for _name in writable_names():
    if _name not in PooledConnection.__dict__:
        setattr(PooledConnection, _name, _setting(_name))
del _name

PYTHON_WITH = (PooledConnection.__enter__, PooledConnection.__exit__)


def _native_with() -> tuple[Any, Any] | None:
    """The handle's __enter__ and __exit__ in C (_sight.c), or None: not built, or turned off
    with THREADPOOL_DB_PURE_PYTHON=1 (as the borrow-site recorder)."""
    if os.environ.get("THREADPOOL_DB_PURE_PYTHON"):
        return None
    try:
        from ._sight import handle_methods
    except ImportError:
        return None
    slots = PooledConnection.__dict__
    return handle_methods(PooledConnection, slots["_raw"], slots["_home"], "_dead")


NATIVE_WITH = _native_with()
if NATIVE_WITH is not None:
    PooledConnection.__enter__, PooledConnection.__exit__ = NATIVE_WITH  # type: ignore[method-assign]


# -- psycopg's own objects, tied to the handle --------------------------------------------------
# Cursors, transactions and pipelines taken through a handle on a psycopg connection are
# instances of psycopg's classes (or of the user's cursor_factory), so psycopg's own checks hold:
# isinstance, next(cur), weak references, Rollback(tx), pipeline re-entry. Each is built with the
# handle as its connection, by a subclass made once per class (tied_class): psycopg's code
# reaches the connection through ``self._conn``, which the subclass turns into a property that
# answers the driver's connection while the handle is borrowed and raises ConnectionReturned
# after it went back; ``connection`` answers the handle. So a stale object can never reach the
# connection again, with no list of them to walk at return: the cycle pays nothing, and an
# object pays one property call per internal use of its connection.
_BINARY = 1  # psycopg.pq.Format.BINARY
_KINDS: dict[type, bool] = {}  # connection class -> is it psycopg's (written once per class)
_TIED_CLASSES: dict[type, type | None] = {}  # class -> its tied subclass (None: not one of psycopg's)


def _is_psycopg(raw: Any) -> bool:
    kind = _KINDS.get(type(raw))
    if kind is None:
        try:
            import psycopg

            kind = isinstance(raw, psycopg.Connection)
        except ImportError:  # pragma: no cover - psycopg is a dependency
            kind = False
        _KINDS[type(raw)] = kind
    return kind


class _Plain:
    """What a tied object holds instead of a handle when user code builds one on a plain
    connection (``type(cur)(other_connection)``): always live."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw


def _where_of(obj: Any) -> str:
    try:
        return obj._where  # type: ignore[no-any-return]
    except AttributeError:
        return "?"


def _conn_get(self: Any) -> Any:
    raw = self._handle._raw
    if raw is None:
        raise dead_use(self._handle, self._tied_what, _where_of(self))
    return raw


def _conn_set(self: Any, conn: Any) -> None:
    if type(conn) is PooledConnection:
        self._handle = conn
        return
    try:
        if self._handle._raw is conn:  # made by _build: its handle was set first
            return
    except AttributeError:
        pass
    self._handle = _Plain(conn)


def _connection(self: Any) -> Any:
    """The handle it was taken through (never the driver's connection, which would bypass it)."""
    handle = self._handle
    return handle if type(handle) is PooledConnection else handle._raw


def tied_class(cls: type) -> type | None:
    """``cls``'s subclass tied to a handle, made once per class; None when ``cls`` is none of
    psycopg's cursor, transaction or pipeline classes (a factory that is a plain function or
    another class: it is then called with the handle as it is)."""
    try:
        return _TIED_CLASSES[cls]
    except KeyError:
        pass
    import psycopg
    from psycopg._cursor_base import BaseCursor

    ns: dict[str, Any] = {"__slots__": ("_handle", "_where"), "__module__": cls.__module__,
                          "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
                          "_conn": property(_conn_get, _conn_set), "connection": property(_connection)}  # fmt: skip
    if issubclass(cls, BaseCursor):
        ns["_tied_what"] = "cursor"
        base_closed = cls.closed.fget  # type: ignore[attr-defined]
        base_check = cls._check_result_for_fetch
        base_close = cls.close

        def closed(self: Any) -> bool:
            """True once closed, and once its connection went back to the pool."""
            return self._handle._raw is None or bool(base_closed(self))

        def _check_result_for_fetch(self: Any) -> Any:
            # every fetch passes here, also those served from rows already received
            if self._handle._raw is None:
                raise dead_use(self._handle, "cursor", _where_of(self))
            return base_check(self)

        def close(self: Any) -> None:
            if self._handle._raw is not None:  # else it went with the connection's return
                base_close(self)

        def __iter__(self: Any) -> Any:
            if self._handle._raw is None:
                raise dead_use(self._handle, "cursor", _where_of(self))
            return base_iter(self)

        base_iter = cls.__iter__
        ns.update(closed=property(closed), _check_result_for_fetch=_check_result_for_fetch, close=close,
                  __iter__=__iter__)  # fmt: skip
    elif issubclass(cls, psycopg.Transaction):
        ns["_tied_what"] = "transaction"
    elif issubclass(cls, psycopg.Pipeline):
        ns["_tied_what"] = "pipeline"
        del ns["connection"]
    else:
        _TIED_CLASSES[cls] = None
        return None
    sub = type(cls.__name__, (cls,), ns)
    _TIED_CLASSES[cls] = sub
    return sub


def _build(factory: Any, where: str, handle: PooledConnection, **kwargs: Any) -> Any:
    cls = tied_class(factory) if isinstance(factory, type) else None
    if cls is None:  # not psycopg's: it gets the handle, whose every use checks it is borrowed
        return factory(handle, **kwargs)
    # Built on the driver's connection, its handle set first: psycopg's __init__ then reads the
    # connection's pgconn and adapters directly (a read of conn.adapters through the handle is
    # a borrower's, and marks the map for restore).
    obj = cls.__new__(cls)
    obj._handle = handle
    obj._where = where
    obj.__init__(handle._raw, **kwargs)
    return obj


@contextlib.contextmanager
def _transaction(handle: PooledConnection, savepoint_name: str | None, force_rollback: bool,
                 where: str) -> Iterator[Any]:  # fmt: skip
    """psycopg's ``Connection.transaction``, with a tied Transaction."""
    raw = handle._raw
    if raw is None:
        raise dead_use(handle, "transaction", where)
    import psycopg

    tx = _build(psycopg.Transaction, where, handle, savepoint_name=savepoint_name, force_rollback=force_rollback)
    if raw._pipeline:
        with handle.pipeline(), tx, handle.pipeline():
            yield tx
        return
    # The outermost block (no transaction open as it begins) sends COMMIT as it ends well: a
    # link lost then leaves the outcome unknown, and the error says so (commits.py).
    outer = not force_rollback and raw.pgconn.transaction_status == IDLE
    sending = False
    try:
        with tx:
            yield tx
            sending = outer and commits.will_send(raw.pgconn)  # the body ended well: COMMIT next
    except psycopg.OperationalError as e:
        if sending:
            commits.unknown_if_lost(e, raw.pgconn)
        raise


@contextlib.contextmanager
def _pipeline(handle: PooledConnection, where: str) -> Iterator[Any]:
    """psycopg's ``Connection.pipeline``, with a tied Pipeline: the connection's current one
    when re-entered."""
    raw = handle._raw
    if raw is None:
        raise dead_use(handle, "pipeline", where)
    import psycopg

    with raw.lock:
        raw._check_connection_ok()
        pipeline = raw._pipeline
        if pipeline is None:
            pipeline = raw._pipeline = _build(psycopg.Pipeline, where, handle)
    try:
        with pipeline:
            yield pipeline
    finally:
        # leave the connection's pipeline slot alone once it is another borrower's
        if pipeline.level == 0 and handle._raw is raw:
            with raw.lock:
                if raw._pipeline is pipeline:
                    raw._pipeline = None


def _summary(raw: Any) -> str:
    """psycopg's status and where it is connected ("[IDLE] (host=... database=...) "), no
    password; "" for another driver."""
    if not _is_psycopg(raw):
        return ""
    try:
        from psycopg.pq.misc import connection_summary

        return f"{connection_summary(raw.pgconn)} "
    except Exception:  # a private helper of psycopg's: its absence costs only the detail
        return ""


# -- what dies with the handle ---------------------------------------------------------------
_TIED: tuple[type, ...] | None = None  # psycopg's objects bound to a connection, loaded lazily


def _tied_types() -> tuple[type, ...]:
    global _TIED
    if _TIED is None:
        try:
            import psycopg

            # cursor.copy() and connection.pipeline() are @contextmanager functions: what they
            # return is contextlib's context manager, entered later
            _TIED = (psycopg.Cursor, psycopg.ServerCursor, psycopg.Copy, psycopg.Transaction, psycopg.Pipeline,
                     types.GeneratorType, contextlib._GeneratorContextManager)  # fmt: skip
        except (ImportError, AttributeError):  # pragma: no cover - psycopg is a dependency
            _TIED = (types.GeneratorType,)
    return _TIED


def taken_at(depth: int = 2) -> str:
    """``file:line`` of the caller ``depth`` frames up (where a guarded object was taken)."""
    try:
        f = sys._getframe(depth)
    except ValueError:
        return "?"
    return f"{f.f_code.co_filename}:{f.f_lineno}"


def dead_use(handle: PooledConnection, what: str, where: str) -> ConnectionReturned:
    """The error for using ``what`` (taken at ``where``) after its handle was returned."""
    gone = handle.died  # the reason (reclaimed, forked) when the handle did not simply go back
    pool = handle._owner()
    name = pool.name if pool is not None else "?"
    borrowed, returned = handle._borrow_site, handle._return_site
    msg = (f"this {what} (taken at {where}) belongs to a connection that went back to pool {name!r}"
           f"{f', borrowed at {borrowed}' if borrowed else ''}{f', returned at {returned}' if returned else ''}; "
           "it cannot be used any more: take a new one from a new borrow")  # fmt: skip
    if isinstance(gone, ConnectionReturned):
        return type(gone)(f"{msg} ({gone})")
    if isinstance(gone, PoolError):
        return ConnectionReturned(f"{msg} ({gone})")
    return ConnectionReturned(msg)


def wrap(result: Any, handle: PooledConnection, where: str, inner: Any = None, outer: Any = None) -> Any:
    """Guard ``result`` if it is bound to the connection (``inner`` returned as itself maps to
    ``outer``, the guard that produced it: ``cur.execute()`` returns the cursor)."""
    if inner is not None and result is inner:
        return outer
    if isinstance(result, _tied_types()):
        if isinstance(result, types.GeneratorType):
            return _guard_iter(result, handle, where)
        return Guarded(result, handle, type(result).__name__.lower(), where)
    return result


def _guard_iter(gen: Iterator[Any], handle: PooledConnection, where: str) -> Iterator[Any]:
    """Each item is pulled only while the handle is borrowed: pulling uses the connection."""
    it = iter(gen)
    while True:
        if handle._raw is None:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            raise dead_use(handle, "generator", where)
        try:
            item = next(it)
        except StopIteration:
            return
        yield item


class Guarded:
    """A cursor, copy, transaction or pipeline that works only while its handle is borrowed."""

    __slots__ = ("_obj", "_handle", "_what", "_where")

    def __init__(self, obj: Any, handle: PooledConnection, what: str, where: str) -> None:
        self._obj = obj
        self._handle = handle
        self._what = what
        self._where = where

    def _live(self) -> Any:
        if self._handle._raw is None:
            raise dead_use(self._handle, self._what, self._where)
        return self._obj

    # -- the calls a request makes, forwarded without a lookup ---------------------------------
    def execute(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._live()
        return wrap(obj.execute(*args, **kwargs), self._handle, self._where, obj, self)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._live()
        return wrap(obj.executemany(*args, **kwargs), self._handle, self._where, obj, self)

    def fetchone(self) -> Any:
        return self._live().fetchone()

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        return self._live().fetchmany(*args, **kwargs)

    def fetchall(self) -> Any:
        return self._live().fetchall()

    def close(self) -> None:
        if self._handle._raw is not None:  # after the return it is closed already (or dead)
            self._obj.close()

    def __iter__(self) -> Iterator[Any]:
        obj = self._live()
        return _guard_iter(iter(obj), self._handle, self._where)

    def __enter__(self) -> Any:
        return wrap(self._live().__enter__(), self._handle, self._where, self._obj, self)

    def __exit__(self, *exc: Any) -> Any:
        if self._handle._raw is None:
            return None  # the connection went back inside the block: nothing left to close
        return self._obj.__exit__(*exc)

    @property
    def closed(self) -> bool:
        """True once closed, and once its connection went back (read without raising)."""
        return self._handle._raw is None or bool(self._obj.closed)

    @property
    def connection(self) -> PooledConnection:
        """The handle, never the driver's connection (that would bypass the guard)."""
        self._live()
        return self._handle

    # -- everything else ----------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        value = getattr(self._live(), name)
        if callable(value) and not isinstance(value, type):
            return self._method(value)
        return value

    def _method(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            obj = self._live()
            return wrap(fn(*args, **kwargs), self._handle, self._where, obj, self)

        return call

    def __repr__(self) -> str:
        state = "live" if self._handle._raw is not None else "dead: its connection was returned"
        return f"<guarded {self._what} ({state}) {self._obj!r}>"
