"""threadpool_db: a blocking, fair connection pool for threaded WSGI apps, with leak detection.

A map of the package: what each module owns, and how a borrow flows through it. An arrow
only points down this list (a module uses the ones below it), and no two modules import each
other, directly or in a ring, type-only imports included (tests/test_structure.py checks it).

Faces (what users import)
  __init__.py    ConnectionPool, NullConnectionPool, the errors.
  flask.py       FlaskPool; routing.py RoutingPool; null_pool.py NullConnectionPool;
  metrics.py     Prometheus export, through pool.add_observer(); otel.py OpenTelemetry.
  django/        the Django ENGINE (threadpool_db.django): our pool where Django builds
                 psycopg_pool's; request labels, the 503 middleware, connection_scope.
Core
  pool.py        ConnectionPool: the lock, the idle deque, the waiters, the counters, and the
                 paths that change them, in flow order: admit, wait, grant, finish, return, undo;
                 its lifecycle (open, close, fork) and the seams the services call (private names).
Handle
  connection.py  PooledConnection, the handle a borrower gets (dies on return): it takes
                 psycopg's attribute writes and hands out psycopg's own cursor, transaction and
                 pipeline classes tied to it (other drivers' objects behind a guard), all dead
                 after the return. It reaches its pool through ``Owner``.
Services (own their state; each declares the Protocol it needs of the pool)
  connector.py   makes, checks, resets and closes one connection and says whether it is broken
                 (the seam for kinds of connection); the reconnect loop and its backoff
                 (``Growing``); configuration errors.
  housekeeper.py retires idle/expired connections, decides bursts (``Sweepable``).
  leaks.py       leak reports and reclaim (``LeaseTable``); _sight.c the borrow-site recorder in C.
  future.py      getconn_future() borrows, and the thread that resolves them (``Granter``).
  workers.py     the creator and housekeeper threads; forking.py the fork hooks.
Records
  records.py     Slot (one connection), Waiter and ``Queued`` (a borrower in the queue).
Leaves
  config.py (every parameter validated once; the size rule), drivers.py (the ``Driver``
  Protocol, the psycopg / DB-API adapters, connect-error classes), quotas.py (who is served
  next: tenant quotas, priorities), stats.py (windows and the formatting of stats, the
  observers' recorders), advisor.py (sizing from a snapshot; what the server said), errors.py
  (the exceptions, and the words of a timeout), commits.py (COMMIT, and a commit lost in
  flight told apart), redact.py, pgbouncer.py.
Test bed: embedded.py (embedded PostgreSQL, PgBouncer) and devdb.py, its command line. The
library never imports them.

A borrow: getconn() asks the leak detector where it is called from (one frame walk), takes the
lock, pops an idle connection and, unless it must be validated first, finishes the borrow
(_finish_borrow_locked: counted, owner, site, handle) before releasing the lock. Otherwise it
queues a Waiter (its own condition) and asks the creators to grow; putconn() or a new
connection hands the slot straight to the oldest waiter (_hand_over_locked), finishing its
borrow for it. putconn() asks the connector to reset the connection (rollback, settings)
outside the lock, then, under it, retires the handle and hands the slot on, to the next
waiter, to the idle deque, or away. A ``with`` block's end is one call: the handle's __exit__
calls putconn(conn, exc, commit).
"""

from .connection import PooledConnection
from .errors import (
    BadReturn,
    CommitOutcomeUnknown,
    ConnectionReclaimed,
    ConnectionReturned,
    PoolClosed,
    PoolConfigError,
    PoolError,
    PoolTimeout,
    ReturnedTwice,
    TenantQuotaExceeded,
    TooManyWaiters,
)
from .null_pool import NullConnectionPool
from .pool import ConnectionPool

TooManyRequests = TooManyWaiters  # psycopg_pool's name for it

__all__ = [
    "BadReturn",
    "CommitOutcomeUnknown",
    "ConnectionPool",
    "ConnectionReclaimed",
    "ConnectionReturned",
    "NullConnectionPool",
    "PoolClosed",
    "PoolConfigError",
    "PoolError",
    "PoolTimeout",
    "PooledConnection",
    "ReturnedTwice",
    "TenantQuotaExceeded",
    "TooManyRequests",
    "TooManyWaiters",
]
__version__ = "0.1.0"
