"""The ENGINE's ``DatabaseWrapper``: Django's PostgreSQL backend, with our pool where Django
builds psycopg_pool's.

Django loads ``<ENGINE>.base`` and takes its ``DatabaseWrapper``; features, operations,
introspection and schema editing are Django's own, inherited. What changes:

- ``pool`` builds a ``threadpool_db.ConnectionPool`` (one per alias and process) from
  ``OPTIONS["pool"]`` (True, or a dict of our options), with Django's connect parameters,
  Django's ``_configure_connection`` as ``configure``, and the check: the user's ``check`` if
  given, else ``"always"`` with ``CONN_HEALTH_CHECKS`` and ``"auto"`` without. Django's frames
  are never the borrower in a leak report (``framework_dirs``). ``CONN_MAX_AGE`` must be 0.
- Each borrow is tagged with the request it serves (``labels``) and whether the wrapper is
  shared between threads (Django's ``inc_thread_sharing``): the leak report names the request,
  and a thread that ended holding a connection is reclaimed unless it shared it.
- Server-side cursors that Django builds itself (``ServerSideCursor(connection, ...)``, not
  made through the handle's ``cursor()``) are handed to the pool, which closes them when the
  connection goes back: a WITH HOLD cursor does not outlive the request.
- Opt-in, ``OPTIONS["release_after_query"] = True``: outside ``atomic()`` the connection goes
  back to the pool as soon as no cursor of it is open (after each ORM query), and after the
  outermost ``atomic()`` block, so a gthread worker serves more threads than it has
  connections. Session state (``SET``, temporary tables, advisory locks, ``LISTEN``) then does
  not outlive a query.
- After ``os.fork()`` a child forgets the connections its wrappers hold (they belong to the
  parent's sessions): the next query borrows from the child's own pool.
"""

from __future__ import annotations

import inspect
import os
import weakref
from typing import Any

import asgiref
import django
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base as pg_base

from ..pool import ConnectionPool
from . import labels
from .cursors import CursorDebugWrapper, CursorWrapper

# Django's folders, and asgiref's (its sync/async bridge): their frames stand between the
# application's line and the pool, and are never the borrower. (threadpool_db's own folder,
# this subpackage included, is always skipped.)
FRAMEWORK_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep for m in (django, asgiref))
# What the backend sets itself: a pool option of the same name would be silently lost.
RELEASE_AFTER_QUERY = "release_after_query"  # the OPTIONS key of the opt-in (see the module docstring)
_OWN = ("conninfo", "connect", "kwargs", "open", "driver", "framework_dirs")
_POOL_PARAMS = frozenset(inspect.signature(ConnectionPool).parameters)

# Every wrapper of this ENGINE in this process, for the fork hook (a child forgets their
# connections). Weak: a wrapper lives as long as Django's per-thread storage keeps it.
_wrappers: weakref.WeakSet[DatabaseWrapper] = weakref.WeakSet()


def _slot_of(handle: Any) -> Any:
    """The pool's record of a borrowed handle (the Slot behind it), or None once it is back.
    The one place this package reads the handle's internals."""
    return getattr(handle, "_slot", None)


def pool_options(settings_dict: dict[str, Any]) -> Any:
    """``OPTIONS["pool"]`` of a DATABASES entry of this ENGINE: pooled unless it says False
    (choosing this ENGINE is choosing the pool)."""
    return settings_dict["OPTIONS"].get("pool", True)


class DatabaseWrapper(pg_base.DatabaseWrapper):
    """Django's PostgreSQL wrapper, pooled by threadpool_db (see the module docstring)."""

    # alias -> our pool, in this process (Django's class keeps psycopg_pool's in its own dict)
    _connection_pools: dict[str, ConnectionPool] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # release_after_query: the cursors open on this borrow (weak: one dropped unclosed does
        # not pin the connection), and whether connect() is still under way (its own
        # set_autocommit must not give back what it just borrowed). This thread's only.
        self._open_cursors: weakref.WeakSet[Any] = weakref.WeakSet()
        self._connecting = False
        _wrappers.add(self)

    # -- the pool -------------------------------------------------------------------------------
    @property
    def pool(self) -> ConnectionPool | None:
        options = pool_options(self.settings_dict)
        if self.alias == NO_DB_ALIAS or not options:
            return None
        pool = self._connection_pools.get(self.alias)
        if pool is None:
            # Two threads may build one each at start-up: the first stored wins, and the other
            # (never opened: open=False) is closed at once.
            made = self._build_pool(options)
            pool = self._connection_pools.setdefault(self.alias, made)
            if pool is not made:
                made.close()
        return pool

    def _build_pool(self, options: Any) -> ConnectionPool:
        where = f"DATABASES[{self.alias!r}]['OPTIONS']['pool']"
        if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
            # Django's own words: a pooled connection goes back at the end of each request
            raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
        if options is True:
            options = {}
        if not isinstance(options, dict):
            raise ImproperlyConfigured(f"{where} must be True or a dict of pool options, got {options!r}")
        own = sorted(set(options) & set(_OWN))
        if own:
            raise ImproperlyConfigured(f"{where}: {', '.join(own)} cannot be set here: the backend sets it from "
                                       "the DATABASES entry")  # fmt: skip
        unknown = sorted(set(options) - _POOL_PARAMS)
        if unknown:
            raise ImproperlyConfigured(f"{where}: unknown option(s) {', '.join(unknown)} (see docs/api.md)")
        options = dict(options)
        if "check" not in options:
            options["check"] = "always" if self.settings_dict["CONN_HEALTH_CHECKS"] else "auto"
        options.setdefault("name", f"django-{self.alias}")
        configure = self._configure_connection
        user_configure = options.pop("configure", None)
        if user_configure is not None:  # the user's runs after Django's (time zone, role)

            def configure(raw: Any, django_configure: Any = configure) -> None:
                django_configure(raw)
                user_configure(raw)

        connect_kwargs = self.get_connection_params()
        connect_kwargs["autocommit"] = True  # Django sets the mode it wants after the borrow
        try:
            return ConnectionPool(kwargs=connect_kwargs, open=False, configure=configure,
                                  framework_dirs=FRAMEWORK_DIRS, **options)  # fmt: skip
        except (TypeError, ValueError) as e:
            raise ImproperlyConfigured(f"{where}: {e}") from e

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        params.pop(RELEASE_AFTER_QUERY, None)  # ours, not psycopg's
        return params

    # -- borrow and return ----------------------------------------------------------------------
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self._connecting = True  # until init_connection_state(), the end of connect()
        connection = super().get_new_connection(conn_params)
        if self.pool is not None:
            slot = _slot_of(connection)
            if slot is not None:
                slot.context = labels.current()
                slot.shared = self.allow_thread_sharing
        return connection

    def init_connection_state(self) -> None:
        try:
            super().init_connection_state()
        finally:
            self._connecting = False

    def _close(self) -> None:
        self._open_cursors.clear()
        if self.connection is not None and self.pool is not None:
            slot = _slot_of(self.connection)
            if slot is not None:  # the record outlives this borrow: leave nothing of it behind
                slot.context = None
                slot.shared = False
        super()._close()

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = super().create_cursor(name)
        if name and self.pool is not None:
            # Django built this server-side cursor on the handle itself (ServerSideCursor(conn,
            # ...)), not through the handle's cursor(), so the pool has not seen it: hand it
            # over as the handle's cursor() would, so the return closes it (a WITH HOLD cursor
            # would otherwise stay open on the connection for the next borrower).
            self.connection._track_named(cursor)
        return cursor

    # -- release_after_query (opt-in) ---------------------------------------------------------
    def make_cursor(self, cursor: Any) -> CursorWrapper:
        return self._track(CursorWrapper(cursor, self))

    def make_debug_cursor(self, cursor: Any) -> CursorDebugWrapper:
        return self._track(CursorDebugWrapper(cursor, self))

    def _track(self, wrapped: Any) -> Any:
        if self.settings_dict["OPTIONS"].get(RELEASE_AFTER_QUERY):
            self._open_cursors.add(wrapped)
        return wrapped

    def cursor_closed(self, wrapped: Any) -> None:
        """A cursor of this wrapper was closed (cursors.py)."""
        self._open_cursors.discard(wrapped)
        self._release_if_idle()

    def set_autocommit(self, autocommit: bool, force_begin_transaction_with_broken_autocommit: bool = False) -> None:
        super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)
        if autocommit:  # the end of the outermost atomic() block (or of a manual transaction)
            self._release_if_idle()

    def _release_if_idle(self) -> None:
        """With release_after_query: give the connection back when no cursor of it is open and
        no transaction needs it (outside atomic(), in autocommit), unless connect() is under
        way or the wrapper is shared between threads (another thread may be using it)."""
        if (self.connection is not None and not self._open_cursors and not self.in_atomic_block
                and not self._connecting and self.autocommit and not self.allow_thread_sharing
                and self.settings_dict["OPTIONS"].get(RELEASE_AFTER_QUERY) and self.pool is not None):  # fmt: skip
            self.close()

    # -- thread sharing: a shared connection outlives its thread on purpose ----------------------
    def inc_thread_sharing(self) -> None:
        super().inc_thread_sharing()
        self._mark_shared()

    def dec_thread_sharing(self) -> None:
        super().dec_thread_sharing()
        self._mark_shared()

    def _mark_shared(self) -> None:
        if self.connection is not None and pool_options(self.settings_dict):
            slot = _slot_of(self.connection)
            if slot is not None:
                slot.shared = self.allow_thread_sharing

    # -- fork ---------------------------------------------------------------------------------
    def _forget_after_fork(self) -> None:
        """In a forked child: the connection is the parent's session (its handle was retired
        by the pool's own fork hook). Drop it without a word to the server, and the
        transaction state with it, as a fresh connect() would."""
        if self.connection is None:
            return
        self.connection = None
        self.in_atomic_block = False
        self.savepoint_ids = []
        self.atomic_blocks = []
        self.needs_rollback = False
        self.closed_in_transaction = False
        self.run_on_commit = []


def _after_fork_in_child() -> None:
    for wrapper in list(_wrappers):
        try:
            wrapper._forget_after_fork()
        except Exception:  # a fork hook must never fail the fork
            pass


# Registered after threadpool_db.forking's (imported with the pool above), so it runs after the
# pools have retired their handles in the child.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
