"""threadpool_db: a blocking, fair connection pool for threaded WSGI apps, with leak detection."""

from .connection import PooledConnection
from .errors import ConnectionReclaimed, PoolClosed, PoolError, PoolTimeout, TenantQuotaExceeded, TooManyWaiters
from .pool import ConnectionPool

__all__ = [
    "ConnectionPool",
    "ConnectionReclaimed",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "PooledConnection",
    "TenantQuotaExceeded",
    "TooManyWaiters",
]
__version__ = "0.1.0"
