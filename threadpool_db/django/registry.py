"""Each alias's pool, for what the pool already offers per pool: Prometheus
(``threadpool_db.metrics.PoolMetrics``) and OpenTelemetry (``threadpool_db.otel.instrument``)
metrics, the sizing advisor (``pool.advise()``), stats and leak reports, and failing fast at
start-up (``open_pools``)."""

from __future__ import annotations

from django.db import connections

from ..pool import ConnectionPool
from .base import DatabaseWrapper


def pools() -> dict[str, ConnectionPool]:
    """``{alias: pool}`` for every DATABASES entry of this ENGINE that pools, in this process.
    Building a pool validates its options (``ImproperlyConfigured`` names the alias and the
    option); it is not opened."""
    out: dict[str, ConnectionPool] = {}
    for alias in connections:
        wrapper = connections[alias]
        if isinstance(wrapper, DatabaseWrapper):
            pool = wrapper.pool
            if pool is not None:
                out[alias] = pool
    return out


def open_pools(timeout: float = 30.0) -> dict[str, ConnectionPool]:
    """Open every alias's pool and wait for its ``min_size`` connections: a wrong password or an
    unreachable server fails here, with its cause (``PoolConfigError`` at once, ``PoolTimeout``
    after ``timeout``), not at the first request. Call it where the serving process starts
    (gunicorn's ``post_fork``, a Celery ``worker_process_init``), not in a pre-fork master."""
    found = pools()
    for pool in found.values():
        pool.open(wait=True, timeout=timeout)
    return found
