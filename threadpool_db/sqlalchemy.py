"""FairQueuePool: SQLAlchemy's QueuePool, fair (FIFO), leak-telling, on threadpool_db's core.

``create_engine(url, poolclass=FairQueuePool, pool_size=5, max_overflow=10, pool_timeout=30)``
and the options of our own by name (``leak_threshold``, ``capture_stacks``, ``max_waiting``,
``name`` ...). There is no second pool implementation: a ``ConnectionPool`` pools SQLAlchemy's
connection records through the connector's seam (a ``drivers.Driver`` of records), and
SQLAlchemy keeps everything it owns: the records and fairies, every pool event, pre-ping,
recycle, invalidation, the reset on return. The core adds the FIFO handoff, admission control,
the leak detector (the borrow site is the application's line, never a frame of SQLAlchemy or of
ours), the stats, and fork safety.

How a record lives: the core makes records *unconnected* (at once, never failing); SQLAlchemy
connects one in the borrower's thread when it is checked out (``get_connection``), so connect
errors and the ``connect`` events happen where QueuePool has them, and a record whose connect
failed comes back to the pool to try again, as QueuePool's do. QueuePool's arithmetic holds:
``pool_size`` records rest idle at most (a return beyond that closes the record, as QueuePool
closes its overflow), ``pool_size + max_overflow`` exist at most (a negative ``max_overflow``:
no limit). ``timeout=None`` waits as long as it takes. ``recreate()`` leaves the pool it
replaces working, as QueuePool's does (``engine.dispose()`` disposes of it first: its idle
connections close, and the rest as they come back).
"""

from __future__ import annotations

import math
import os
import weakref
from typing import Any

import sqlalchemy
from sqlalchemy import exc
from sqlalchemy.engine import CreateEnginePlugin
from sqlalchemy.pool import Pool
from sqlalchemy.pool.base import _ConnectionRecord

from .config import UNLIMITED, int_at_least
from .drivers import IDLE, DbapiDriver, PsycopgDriver
from .errors import PoolTimeout
from .pool import ConnectionPool

_SQLALCHEMY_DIR = os.path.dirname(os.path.abspath(sqlalchemy.__file__)) + os.sep


def _framework_dirs() -> tuple[str, ...]:
    """SQLAlchemy's folder, and Flask-SQLAlchemy's where it is installed: their frames stand
    between the application's line and the pool, and are never the borrower."""
    # and the code SQLAlchemy generates at run time: "<sqlalchemy generated ...>" in 2.1,
    # "<string>" in 2.0 (its decorator wrappers are exec'd)
    dirs = [_SQLALCHEMY_DIR, "<sqlalchemy ", "<string>"]
    try:
        import flask_sqlalchemy

        dirs.append(os.path.dirname(os.path.abspath(flask_sqlalchemy.__file__)) + os.sep)
    except ImportError:
        pass
    return tuple(dirs)


class _Records(DbapiDriver):
    """The connector's seam for SQLAlchemy's connection records: made unconnected (SQLAlchemy
    connects them at checkout), reset by SQLAlchemy (so nothing to do here), closed through
    the record (which fires SQLAlchemy's ``close`` event)."""

    name = "sqlalchemy"
    knows_status = True

    def __init__(self, pool: Pool) -> None:
        # Weakly: the pool holds its core, which holds this driver. A pool that a recreate()
        # replaced is then freed as soon as nothing holds it (no record out, none idle), and
        # its core's __del__ ends its threads: no wait for the cyclic garbage collector.
        ref = weakref.ref(pool)
        super().__init__(lambda: _ConnectionRecord(ref(), connect=False))

    def settings(self, raw: Any) -> tuple[Any, ...]:
        return ()

    def restore(self, raw: Any, settings: tuple[Any, ...]) -> None:
        pass

    def status(self, raw: Any) -> int:
        return IDLE  # SQLAlchemy resets a connection (reset_on_return) before it comes back

    def rollback(self, raw: Any) -> None:
        pass

    def validate(self, raw: Any, timeout: float) -> None:
        pass  # pre-ping is SQLAlchemy's (pool_pre_ping)

    def close(self, raw: Any) -> None:
        raw.close()

    def abort(self, raw: Any) -> None:
        """From another thread (a reclaim): cancel and cut a psycopg connection's socket; for
        other drivers, invalidate the record."""
        dbapi = raw.dbapi_connection
        if dbapi is not None and type(dbapi).__module__.startswith("psycopg."):
            PsycopgDriver.abort(self, dbapi)
        else:
            raw.invalidate()

    def backend_pid(self, raw: Any) -> int | None:
        return None


class _Core(ConnectionPool):
    """The core for one FairQueuePool: records rest idle up to pool_size, lent oldest first
    unless use_lifo, and made on demand (min_size 0)."""

    _keep_idle = False
    # unnamed: sqlalchemy-1, sqlalchemy-2 ... (never an id(), which Python reuses once a pool
    # is gone: a recreate() would then log and export under its predecessor's name)
    _default_name = "sqlalchemy"

    def __init__(self, pool_size: int, use_lifo: bool, **kwargs: Any) -> None:
        self._idle_cap = pool_size if pool_size > 0 else UNLIMITED
        self._fifo_idle = not use_lifo
        super().__init__(**kwargs)


class FairQueuePool(Pool):
    """A ``sqlalchemy.pool.Pool`` with QueuePool's options and arithmetic, FIFO handoff,
    leak detection, admission control and threadpool_db's stats. Sync only."""

    _is_asyncio = False  # as QueuePool: whatever the dialect, so an asyncio engine refuses it

    def __init__(
        self,
        creator: Any,
        pool_size: int = 5,
        max_overflow: int = 10,
        timeout: float | None = 30.0,
        use_lifo: bool = False,
        # threadpool_db's own options (positional-or-keyword: create_engine passes them on by name)
        leak_threshold: float | None = 60.0,
        capture_stacks: str = "sampled",
        stack_sample_rate: float = 0.05,
        reclaim_leaked: bool = False,
        max_waiting: int = 0,
        name: str | None = None,
        **kw: Any,
    ) -> None:
        Pool.__init__(self, creator, **kw)
        int_at_least("pool_size", pool_size, 0)
        int_at_least("max_overflow", max_overflow, -(1 << 62), " (negative: no limit)")
        self._pool_size, self._timeout, self._use_lifo = pool_size, timeout, use_lifo
        self._max_overflow = -1 if pool_size == 0 or max_overflow < 0 else max_overflow  # QueuePool's rule
        self._ours = {"leak_threshold": leak_threshold, "capture_stacks": capture_stacks,
                      "stack_sample_rate": stack_sample_rate, "reclaim_leaked": reclaim_leaked,
                      "max_waiting": max_waiting, "name": name}  # fmt: skip
        cap = 0 if self._max_overflow == -1 else pool_size + self._max_overflow
        # Lifetimes, idle limits and checks are SQLAlchemy's (recycle, pre-ping): the core's are off.
        wait = math.inf if timeout is None else timeout  # None: QueuePool waits as long as it takes
        self._core = _Core(pool_size, use_lifo, driver=_Records(self), min_size=0, max_size=cap, timeout=wait,
                           max_lifetime=math.inf, max_idle=math.inf, check="never", num_workers=1, open=True,
                           framework_dirs=_framework_dirs(),
                           **self._ours)  # fmt: skip

    @property
    def core(self) -> ConnectionPool:
        """The threadpool_db pool under it: ``stats()``, ``leaks()``, ``borrowed()``, the
        Prometheus and OpenTelemetry exports (``PoolMetrics(pool.core)``, ``instrument``)."""
        return self._core

    # -- SQLAlchemy's Pool interface ------------------------------------------------------------
    def _do_get(self) -> Any:
        try:
            handle = self._core.getconn()
        except PoolTimeout as e:
            raise exc.TimeoutError(
                f"FairQueuePool limit of size {self.size()} overflow {self.overflow()} reached, connection "
                f"timed out, timeout {self._timeout or 0:0.2f}: {e}",
                code="3o7r",
            ) from None
        record = handle.driver_connection
        record._threadpool_db_handle = handle  # the record carries its handle back to _do_return_conn
        return record

    def _do_return_conn(self, record: Any) -> None:
        handle = record.__dict__.pop("_threadpool_db_handle", None)
        if handle is None or handle not in self._core:  # not lent by this pool (a recreate's): close it
            record.close()
            return
        self._core.putconn(handle, None, False)  # a closed core closes it, quietly

    def dispose(self) -> None:
        """Close the idle connections, as QueuePool's: those out come back to the pool as
        usual (after ``recreate()``, they close as they come back)."""
        self._core.drain(borrowed=False)
        self.logger.info("Pool disposed. %s", self.status())

    def recreate(self) -> FairQueuePool:
        """A new pool like this one (what engine.dispose() puts in its place). This one goes on
        working, as a recreated QueuePool does: SQLAlchemy may still check connections out of
        it and back in. Its threads end when it is collected (the core's __del__)."""
        self.logger.info("Pool recreating")
        made = self.__class__(
            self._creator, pool_size=self._pool_size, max_overflow=self._max_overflow, timeout=self._timeout,
            use_lifo=self._use_lifo, pre_ping=self._pre_ping, recycle=self._recycle, echo=self.echo,
            logging_name=self._orig_logging_name, reset_on_return=self._reset_on_return, _dispatch=self.dispatch,
            dialect=self._dialect, **self._ours,
        )  # fmt: skip
        self._core.drain(idle=False)  # what was out closes as it comes back (engine.dispose() replaced us)
        return made

    def status(self) -> str:
        return (f"Pool size: {self.size()}  Connections in pool: {self.checkedin()} Current Overflow: "
                f"{self.overflow()} Current Checked out connections: {self.checkedout()}")  # fmt: skip

    # QueuePool's arithmetic: overflow counts the records above pool_size (negative below it)
    def size(self) -> int:
        return self._pool_size

    def timeout(self) -> float | None:
        return self._timeout

    def checkedin(self) -> int:
        return int(self._core.get_stats()["pool_available"])

    def overflow(self) -> int:
        return int(self._core.get_stats()["pool_size"]) - self._pool_size if self._pool_size else 0

    def checkedout(self) -> int:
        s = self._core.get_stats()
        return int(s["pool_size"]) - int(s["pool_available"])


# -- by the database URL alone: ?plugin=threadpool_db -------------------------------------------
def _as_bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _as_float_or_none(text: str) -> float | None:
    return None if text.strip().lower() in ("", "none", "null", "off") else float(text)


# The options a URL may carry (query keys), and how to read each: our own, and QueuePool's.
URL_OPTIONS: dict[str, Any] = {
    "leak_threshold": _as_float_or_none, "capture_stacks": str, "stack_sample_rate": float,
    "reclaim_leaked": _as_bool, "max_waiting": int, "name": str,
    "pool_size": int, "max_overflow": int, "pool_timeout": float, "pool_use_lifo": _as_bool,
}  # fmt: skip


class FairQueuePlugin(CreateEnginePlugin):
    """The ``sqlalchemy.plugins`` entry point ``threadpool_db``: with
    ``postgresql+psycopg://...?plugin=threadpool_db`` an application gets FairQueuePool through
    its database URL alone. The options in ``URL_OPTIONS`` may come from the URL too; they are
    taken out of it before the dialect sees it."""

    def __init__(self, url: Any, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        kwargs.setdefault("poolclass", FairQueuePool)
        for key, read in URL_OPTIONS.items():
            if key in url.query:
                value = url.query[key]
                kwargs.setdefault(key, read(value if isinstance(value, str) else value[-1]))

    def update_url(self, url: Any) -> Any:
        return url.difference_update_query(list(URL_OPTIONS))
