"""Read/write split over a primary pool and replica pools.

```python
primary = ConnectionPool(primary_dsn, max_size=8, name="primary", open=True)
replicas = [ConnectionPool(dsn, max_size=8, name=f"replica-{i}", open=True) for i, dsn in enumerate(replica_dsns)]
db = RoutingPool(primary, replicas, read_your_writes=2.0)

with db.connection() as conn:                 # writes: the primary
    conn.execute("INSERT ...")
with db.connection(readonly=True) as conn:    # reads: a healthy replica (the primary for 2 s
    conn.execute("SELECT ...")                # after this thread wrote: read your writes)
```

- Replicas are picked round-robin, or by the fewest connections in use
  (``strategy="least_in_use"``).
- One health thread checks every replica each ``health_interval`` seconds (a borrow with
  ``health_timeout`` and ``SELECT pg_is_in_recovery()``; with ``max_lag``, also the replay
  lag). A failing replica is taken out at once, also when a read borrow from it fails; it
  rejoins when a check passes again.
- With no healthy replica, reads go to the primary (``fallback="primary"``) or fail with
  ``NoHealthyReplica`` (``fallback="fail"``).
- Read-your-writes is per thread, which is per request under gunicorn gthread and Flask: after a
  write borrow (and again when it is given back), reads from the same thread go to the primary
  for ``read_your_writes`` seconds. ``mark_write()`` does the same by hand.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from time import monotonic
from types import TracebackType
from typing import Any

from .connection import PooledConnection
from .errors import PoolError
from .pool import ConnectionPool
from .stats import Window

logger = logging.getLogger("threadpool_db.routing")
_STRATEGIES = ("round_robin", "least_in_use")
_FALLBACKS = ("primary", "fail")


class NoHealthyReplica(PoolError):
    """A read was asked for with fallback="fail" and no replica is healthy."""


class RoutingPool:
    def __init__(
        self,
        primary: ConnectionPool,
        replicas: Sequence[ConnectionPool] = (),
        *,
        read_your_writes: float = 0.0,
        strategy: str = "round_robin",
        fallback: str = "primary",
        health_interval: float = 1.0,
        health_timeout: float = 1.0,
        max_lag: float | None = None,
        name: str = "routing",
    ) -> None:
        if not isinstance(primary, ConnectionPool):
            raise ValueError("primary must be a ConnectionPool")
        if not all(isinstance(r, ConnectionPool) for r in replicas):
            raise ValueError("replicas must be ConnectionPools")
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}, got {strategy!r}")
        if fallback not in _FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(_FALLBACKS)}, got {fallback!r}")
        for pname, v in (("read_your_writes", read_your_writes), ("health_interval", health_interval),
                         ("health_timeout", health_timeout)):  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{pname} must be a number >= 0, got {v!r}")
        self.primary = primary
        self.replicas = list(replicas)
        self.read_your_writes = float(read_your_writes)
        self.strategy = strategy
        self.fallback = fallback
        self.health_timeout = float(health_timeout)
        self.max_lag = max_lag
        self.name = name
        self._lock = threading.Lock()
        self._healthy: list[bool] = [True] * len(self.replicas)  # guarded by _lock
        self._rr = itertools.count()
        self._local = threading.local()
        self._counts = {"primary_reads": 0, "replica_reads": 0, "writes": 0, "fallbacks": 0}
        # seconds each borrow took, by route; observers (RoutingMetrics) hear of each one too
        self.acquire_windows = {"primary": Window(), "replica": Window()}
        self._observers: list[Callable[[str, float], Any]] = []  # replaced whole under _lock, never mutated
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.replicas:
            ref = weakref.ref(self)
            self._thread = threading.Thread(target=_health_loop, args=(ref, self._stop, float(health_interval)),
                                            name=f"{name}-health", daemon=True)  # fmt: skip
            self._thread.start()

    # -- routing ------------------------------------------------------------------------------
    def mark_write(self) -> None:
        """Route this thread's reads to the primary for the next ``read_your_writes`` seconds."""
        self._local.last_write = monotonic()

    def route(self, readonly: bool) -> ConnectionPool:
        """The pool a borrow would go to now."""
        if not readonly:
            return self.primary
        last = getattr(self._local, "last_write", None)
        if last is not None and monotonic() - last < self.read_your_writes:
            return self.primary
        with self._lock:
            up = [r for r, ok in zip(self.replicas, self._healthy, strict=True) if ok]
        if not up:
            if self.fallback == "fail":
                raise NoHealthyReplica(f"routing pool {self.name!r}: no healthy replica for a read")
            self._count("fallbacks")
            return self.primary
        if self.strategy == "least_in_use":
            return min(up, key=lambda p: p.stats()["in_use"])
        return up[next(self._rr) % len(up)]

    def getconn(self, readonly: bool = False, timeout: float | None = None) -> PooledConnection:
        """Borrow for a read (a replica) or a write (the primary); give it back with putconn."""
        t0 = monotonic()
        pool = self.route(readonly)
        if pool is self.primary:
            if not readonly:
                self._count("writes")
                self.mark_write()
            else:
                self._count("primary_reads")
            conn = pool.getconn(timeout)
            self._acquired("primary", monotonic() - t0)
            return conn
        try:
            conn = pool.getconn(self.health_timeout if timeout is None else min(timeout, self.health_timeout))
        except PoolError as e:  # a replica that cannot lend: out until a health check passes
            self._set_health(pool, False, str(e))
            return self.getconn(readonly, timeout)
        self._count("replica_reads")
        self._acquired("replica", monotonic() - t0)
        return conn

    def add_observer(self, observer: Any) -> None:
        """Be told of each borrow: ``observer.route_acquired(route, seconds)``, route being
        "primary" or "replica", on the borrowing thread (keep it quick). RoutingMetrics is one."""
        with self._lock:  # two at once must not lose one (the list is replaced whole, read without it)
            self._observers = [*self._observers, observer.route_acquired]

    def _acquired(self, route: str, seconds: float) -> None:
        self.acquire_windows[route].append(seconds)
        for tell in self._observers:
            tell(route, seconds)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def putconn(self, conn: PooledConnection) -> None:
        pool = next((p for p in (self.primary, *self.replicas) if conn in p), None)
        if pool is None:
            raise PoolError(f"routing pool {self.name!r}: this connection is not out from any of its pools")
        pool.putconn(conn)
        if pool is self.primary and getattr(self._local, "last_write", None) is not None:
            self.mark_write()  # the window counts from the commit too

    def connection(self, readonly: bool = False, timeout: float | None = None) -> _Routed:
        """Like ConnectionPool.connection(): commit on success, roll back on error, give back.
        It borrows here, when called (not in a generator's ``__enter__``), so the leak
        detector's borrow site is the caller's line, not a frame of contextlib."""
        return _Routed(self, self.getconn(readonly, timeout), readonly)

    # -- health -------------------------------------------------------------------------------
    def _set_health(self, pool: ConnectionPool, ok: bool, why: str = "") -> None:
        i = self.replicas.index(pool)
        with self._lock:
            was, self._healthy[i] = self._healthy[i], ok
        if was != ok:
            if ok:
                logger.info("routing pool %r: replica %r is back", self.name, pool.name)
            else:
                logger.warning("routing pool %r: replica %r taken out: %s", self.name, pool.name, why)

    def check_replicas(self) -> None:
        """One round of health checks (the health thread calls this)."""
        for pool in self.replicas:
            ok, why = True, ""
            try:
                with pool.connection(timeout=self.health_timeout) as conn:
                    row = conn.execute(
                        "SELECT pg_is_in_recovery(), "
                        "coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)"
                    ).fetchone()
                if row is not None and self.max_lag is not None and row[0] and float(row[1]) > self.max_lag:
                    ok, why = False, f"replay lag {float(row[1]):.1f} s > max_lag {self.max_lag:g} s"
            except Exception as e:
                ok, why = False, pool.redact(f"{type(e).__name__}: {e}")
            self._set_health(pool, ok, why)

    def healthy(self) -> dict[str, bool]:
        with self._lock:
            return {r.name: ok for r, ok in zip(self.replicas, self._healthy, strict=True)}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
        return {"name": self.name, **counts, "replicas": self.healthy(),
                "pools": {p.name: p.stats() for p in [self.primary, *self.replicas]}}  # fmt: skip

    def close(self) -> None:
        """Stop the health thread and close every pool."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for p in [self.primary, *self.replicas]:
            p.close()


class _Routed:
    """A routed borrow for a ``with`` block: the handle's own commit/rollback and return, then
    (after a write) the thread's read-your-writes window counts from the commit."""

    __slots__ = ("_conn", "_readonly", "_routing")

    def __init__(self, routing: RoutingPool, conn: PooledConnection, readonly: bool) -> None:
        self._routing = routing
        self._conn = conn
        self._readonly = readonly

    def __enter__(self) -> PooledConnection:
        return self._conn.__enter__()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._conn.__exit__(et, ev, tb)
        if not self._readonly and et is None:
            self._routing.mark_write()


def _health_loop(ref: weakref.ReferenceType[RoutingPool], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        rp = ref()
        if rp is None:
            return
        try:
            rp.check_replicas()
        except Exception:
            logger.exception("routing pool %r: health check failed unexpectedly", rp.name)
        del rp
