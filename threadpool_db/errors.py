"""Every exception the pool raises: one base class, one subclass per failure."""

from __future__ import annotations


class PoolError(Exception):
    """Base class of threadpool_db's errors; also raised for misuse (foreign or double return,
    use after return)."""


class PoolTimeout(PoolError):
    """No connection could be had within the timeout."""


class PoolClosed(PoolError):
    """The pool is closed (or was closed while waiting)."""


class TooManyWaiters(PoolError):
    """``max_waiting`` borrowers already wait: this one is refused at once."""


class ConnectionReclaimed(PoolError):
    """The connection was taken back by the leak detector; this handle is dead."""


class TenantQuotaExceeded(PoolError):
    """The tenant already holds its quota of connections and ``tenant_wait`` is False."""
