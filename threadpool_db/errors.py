"""Every exception the pool raises: one base class, one subclass per failure.

As in psycopg_pool, the errors a borrower can meet under load or outage (timeout, closed pool,
too many waiters, configuration error) are also ``psycopg.OperationalError``s, so code written
as ``except psycopg.OperationalError`` keeps catching them after switching pools.
"""

from __future__ import annotations

from psycopg import OperationalError


class PoolError(Exception):
    """Base class of threadpool_db's errors; also raised for misuse (foreign or double return,
    use after return)."""


class PoolTimeout(PoolError, OperationalError):
    """No connection could be had within the timeout.

    ``cause`` is the last connection error (password-free) when the pool had no connection at
    all: then the database is unreachable or refusing us, not busy."""

    cause: str | None = None


class PoolClosed(PoolError, OperationalError):
    """The pool is closed, not opened yet, or was closed while waiting."""


class PoolConfigError(PoolError, OperationalError):
    """The database refuses this pool's configuration (wrong password, no such role or
    database, a conninfo libpq cannot parse, an unknown host name) and the pool holds no
    connection: borrows fail at once instead of waiting out their timeout. The pool keeps
    retrying in the background, so a fixed password (callable conninfo) recovers by itself."""

    cause: str | None = None


class TooManyWaiters(PoolError, OperationalError):
    """``max_waiting`` borrowers already wait: this one is refused at once."""


class ConnectionReturned(PoolError, OperationalError):
    """Use after return: the handle, or a cursor, transaction, pipeline or copy taken through
    it, is used after its connection went back to the pool (also: returned twice). A
    ``psycopg.OperationalError``, as a closed psycopg connection's error is; the message names
    the pool and, when leak detection recorded them, where it was borrowed and returned."""


class ConnectionReclaimed(ConnectionReturned):
    """The connection was taken back by the leak detector; this handle is dead."""


class TenantQuotaExceeded(PoolError, OperationalError):
    """The tenant already holds its quota of connections and ``tenant_wait`` is False."""


# -- the messages: made from what the pool read under its lock ---------------------------------
def config_error(pool: str, target: str, cause: str | None, exc: BaseException | None,
                 retrying: bool) -> PoolConfigError:  # fmt: skip
    """The database refuses the configuration: ``cause`` is its password-free text, ``exc`` the
    driver's exception re-made from it (the ``__cause__``)."""
    tail = "; fix it and the pool recovers by itself (it keeps retrying in the background)" if retrying else ""
    err = PoolConfigError(f"pool {pool!r}: {target} refuses this pool's configuration: {cause}{tail}")
    err.cause = cause
    err.__cause__ = exc
    return err


def timeout_message(pool: str, timeout: float, size: int, idle: int, waiting: int, max_size: int,
                    last_error: str | None) -> str:  # fmt: skip
    return (
        f"pool {pool!r}: no connection available within {timeout:g} s (size={size}, in_use={size - idle}, "
        f"idle={idle}, waiting={waiting}, max_size={max_size}); last connection error: {last_error or 'none'}"
    )


def timeout_error(message: str, unreachable: str | None, exc: BaseException | None) -> PoolTimeout:
    """``unreachable``: the last connection error when the pool had no connection at all (then
    it is not busy, and this says why)."""
    err = PoolTimeout(message)
    if unreachable:
        err.cause = unreachable
        err.__cause__ = exc
    return err
