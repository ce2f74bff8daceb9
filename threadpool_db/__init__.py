"""threadpool_db: a blocking, fair connection pool for threaded WSGI apps, with leak detection."""

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
