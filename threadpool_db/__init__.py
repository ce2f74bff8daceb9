"""threadpool_db: a blocking, fair connection pool for threaded WSGI apps, with leak detection.

A map of the package: what each module owns, and how a borrow flows through it.

Core
  pool.py        ConnectionPool: the only owner of the pool's state (the lock, the idle deque,
                 the waiters, the counters) and of the borrow/return hot path, open/close/fork.
  connection.py  PooledConnection, the handle a borrower gets; dies on return.
Records and configuration
  base.py        Slot (one connection; each field says who guards it), Waiter, size rules.
  config.py      PoolConfig: every parameter validated once, frozen, grouped.
Services (own their state; reach the pool only through a narrow seam)
  connector.py   makes connections, runs borrow-time checks, paces reconnects, knows when the
                 database refuses the configuration.
  housekeeper.py retires idle/expired connections, decides bursts (seam: view/evict/set_ceiling).
  leaks.py       leak reports and reclaim (seam LeaseTable: leased/mark_reported/reclaim/now).
  _sight.c       the borrow-site recorder in C (optional; leaks.py has the same in Python).
  future.py      resolves getconn_future() borrows (seam: hand_out/expire_waiter).
  workers.py     the creator and housekeeper threads; forking.py the fork hooks.
  metrics.py     Prometheus export, through pool.add_observer().
  guard.py       cursors and friends that die with their handle.
Leaves: drivers.py (psycopg / DB-API adapters, connect-error classes), sched.py (tenants,
priorities), stats.py, redact.py, errors.py, advisor.py, pgbouncer.py.
Faces: flask.py (FlaskPool), routing.py (RoutingPool), null_pool.py, devdb.py.
Test bed: testing.py (embedded PostgreSQL, PgBouncer). The library never imports it.

A borrow: getconn() asks the leak detector where it is called from (one frame walk), takes the
lock, pops an idle connection and, unless it must be validated first, makes it the caller's
(_finish_borrow_locked: owner, site, handle) before releasing the lock. Otherwise it queues a
Waiter (its own condition) and asks the creators to grow; putconn() or a new connection hands
the slot straight to the oldest waiter. putconn() resets the connection (rollback, settings)
outside the lock, then, under it, retires the handle and gives the slot to the next waiter, to
the idle deque, or away.
"""

from .connection import PooledConnection
from .errors import (
    ConnectionReclaimed,
    PoolClosed,
    PoolConfigError,
    PoolError,
    PoolTimeout,
    TenantQuotaExceeded,
    TooManyWaiters,
)
from .null_pool import NullConnectionPool
from .pool import ConnectionPool

TooManyRequests = TooManyWaiters  # psycopg_pool's name for it

__all__ = [
    "ConnectionPool",
    "ConnectionReclaimed",
    "NullConnectionPool",
    "PoolClosed",
    "PoolConfigError",
    "PoolError",
    "PoolTimeout",
    "PooledConnection",
    "TenantQuotaExceeded",
    "TooManyRequests",
    "TooManyWaiters",
]
__version__ = "0.1.0"
