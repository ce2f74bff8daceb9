"""What a borrower gets through the handle dies with the handle.

A cursor (client-side or named/server-side), the cursor ``execute()`` returns, ``transaction()``,
``pipeline()``, ``copy()`` and the ``notifies()``/``stream()`` generators are handed out
wrapped in a guard that checks, on every use, that the handle it came from is still
borrowed. After the connection goes back to its pool (or is reclaimed), any use raises
``PoolError`` naming the pool, where the object was taken and, when the leak detector recorded
it, where the connection was borrowed: a stale cursor can no longer write into the next
borrower's transaction. Named cursors are closed on the server when the handle is returned.

A guard costs one attribute check per call. A borrow that takes no cursor pays nothing.
``conn.raw`` stays the unguarded escape hatch.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import PoolError

if TYPE_CHECKING:
    from .connection import PooledConnection

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


def dead_use(handle: PooledConnection, what: str, where: str) -> PoolError:
    """The error for using ``what`` (taken at ``where``) after its handle was returned."""
    gone = handle.died  # the reason (reclaimed, forked) when the handle did not simply go back
    pool = handle._owner()
    name = pool.name if pool is not None else "?"
    borrowed, returned = handle._borrow_site, handle._return_site
    msg = (f"this {what} (taken at {where}) belongs to a connection that went back to pool {name!r}"
           f"{f', borrowed at {borrowed}' if borrowed else ''}{f', returned at {returned}' if returned else ''}; "
           "it cannot be used any more: take a new one from a new borrow")  # fmt: skip
    if isinstance(gone, PoolError):
        return type(gone)(f"{msg} ({gone})")
    return PoolError(msg)


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
