"""NullConnectionPool: psycopg_pool's pool that keeps no idle connection.

Each borrow gets a new connection, which is closed when it comes back unless a borrower is
waiting for it. At most ``max_size`` exist at once (``max_size=0`` or None: no limit, as in
psycopg_pool); beyond that borrowers queue, FIFO, with the same timeouts, handle, reset,
leak detection and fork safety as ``ConnectionPool``. It is what goes in front of PgBouncer,
which does the pooling itself.
"""

from __future__ import annotations

from typing import Any

from .errors import PoolConfigError, PoolTimeout
from .pool import ConnectionPool


class NullConnectionPool(ConnectionPool):
    """A pool with ``min_size=0`` that closes every returned connection nobody waits for."""

    _keep_idle = False

    def __init__(self, conninfo: Any = "", *, min_size: int = 0, max_size: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("check", "never")  # every connection is brand new
        super().__init__(conninfo, min_size=min_size, max_size=max_size, **kwargs)

    def wait(self, timeout: float = 30.0) -> None:
        """As psycopg_pool's: make one connection (connect, and ``configure``) to prove the
        database answers; it is not kept. When none can be made within ``timeout`` the pool is
        closed and ``PoolTimeout`` says why (``PoolConfigError`` at once when the database
        refuses the configuration, as ``ConnectionPool.wait``). It is not a request: the
        borrow is taken off ``borrows`` (psycopg_pool's ``requests_num``), as psycopg_pool's
        wait() makes its connection without one. (One that had to queue behind borrowers, the
        pool being at ``max_size``, still counts in ``waits``.)"""
        try:
            conn = self.getconn(timeout)
        except PoolTimeout as e:
            self.close()
            raise PoolTimeout(f"pool {self.name!r}: no connection could be made within {timeout:g} s: {e}") from e
        except PoolConfigError:
            self.close()  # as ConnectionPool.wait: a pool that cannot open is closed
            raise
        self.putconn(conn)
        with self._lock:  # the one counter a borrow always adds to (_finish_borrow_locked)
            self._borrows -= 1
