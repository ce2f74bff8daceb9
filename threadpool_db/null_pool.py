"""NullConnectionPool: psycopg_pool's pool that keeps no idle connection.

Each borrow gets a new connection, which is closed when it comes back unless a borrower is
waiting for it. At most ``max_size`` exist at once (``max_size=0`` or None: no limit, as in
psycopg_pool); beyond that borrowers queue, FIFO, with the same timeouts, handle, reset,
leak detection and fork safety as ``ConnectionPool``. It is what goes in front of PgBouncer,
which does the pooling itself.
"""

from __future__ import annotations

from typing import Any

from .pool import ConnectionPool


class NullConnectionPool(ConnectionPool):
    """A pool with ``min_size=0`` that closes every returned connection nobody waits for."""

    _keep_idle = False

    def __init__(self, conninfo: Any = "", *, min_size: int = 0, max_size: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("check", "never")  # every connection is brand new
        super().__init__(conninfo, min_size=min_size, max_size=max_size, **kwargs)
