"""The races found by reading the core, each shown where a test can make it happen, against the
real server: a reclaim that lands between a return's checks, a check callback that times out
while still inside libpq, a fork in the middle of borrows, and the configuration as data."""

from __future__ import annotations

import dataclasses
import threading
import time

import psycopg
import pytest

from threadpool_db import ConnectionPool, ConnectionReclaimed
from threadpool_db.config import PoolConfig
from threadpool_db.errors import PoolError

from .helpers import in_child, run_threads, wait_until
from .timing import JOIN, SETTLE


def test_a_reclaim_before_the_return_gives_pool_errors_not_attribute_errors(make_pool):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=30.0)
    conn = pool.getconn()
    slot = next(s for s in pool.leased())
    # the watchdog's reclaim, landing between the borrower's last use and its putconn
    assert pool.reclaim(slot, conn, ConnectionReclaimed("reclaimed in the test"))
    with pytest.raises(ConnectionReclaimed, match="reclaimed in the test"):
        pool.putconn(conn)
    with pytest.raises(ConnectionReclaimed):
        conn.execute("SELECT 1")
    with pytest.raises(ConnectionReclaimed):
        _ = conn.info
    assert conn.died is not None and conn.returned
    with pool.connection(timeout=SETTLE) as c:  # and the slot went to the next borrower
        c.execute("SELECT 1")


class _RecordingConnection(psycopg.Connection):
    closed_by: list[str] = []

    def close(self) -> None:
        _RecordingConnection.closed_by.append(threading.current_thread().name)
        super().close()


def test_a_timed_out_check_is_closed_by_its_own_thread_not_from_beside_it(make_pool, dsn):
    release = threading.Event()

    def slow_check(conn) -> None:
        release.wait(JOIN)  # stands for a check stuck inside the driver

    _RecordingConnection.closed_by.clear()
    pool = make_pool(min_size=0, max_size=1, connection_class=_RecordingConnection, check=slow_check,
                     check_timeout=0.2, wait=False)  # fmt: skip
    with pytest.raises(PoolError):
        pool.getconn(timeout=1.0)  # the check times out (and the backoff keeps retries few)
    assert _RecordingConnection.closed_by == []  # nobody closed it while its check was running
    release.set()
    wait_until(lambda: _RecordingConnection.closed_by, what="the check thread to close it")
    assert all(name.endswith("-check") for name in _RecordingConnection.closed_by), _RecordingConnection.closed_by


def test_forks_in_the_middle_of_borrows_leave_children_a_working_pool(make_pool):
    pool = make_pool(min_size=2, max_size=4)
    stop = threading.Event()

    def churn(i: int) -> None:
        while not stop.is_set():
            with pool.connection(timeout=JOIN) as conn:
                conn.execute("SELECT 1")

    workers = threading.Thread(target=lambda: run_threads(4, churn), daemon=True)
    workers.start()
    try:

        def child() -> dict:
            with pool.connection(timeout=SETTLE) as conn:
                return {"v": conn.execute("SELECT 1").fetchone()[0], "in_use": pool.stats()["in_use"]}

        for _ in range(5):
            time.sleep(0.05)
            assert in_child(child) == {"v": 1, "in_use": 1}
    finally:
        stop.set()
        workers.join(JOIN)
    assert not workers.is_alive()


def test_configuration_is_data_frozen_grouped_and_validated_once(dsn):
    cfg = PoolConfig.build(dsn, min_size=1, max_size=3, tenant_limits={"a": 1}, burst_size=5)
    assert (cfg.sizing.min_size, cfg.sizing.max_size, cfg.burst.size) == (1, 3, 5)
    assert cfg.tenants.limits == {"a": 1} and cfg.leaks.threshold == 60.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sizing.max_size = 9  # type: ignore[misc]
    with pytest.raises(ValueError, match="burst_size"):
        PoolConfig.build(dsn, max_size=4, burst_size=2)
    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=False)
    assert pool.config.sizing == PoolConfig.build(dsn, min_size=1, max_size=2).sizing
    with pytest.raises(ValueError, match="max_size"):  # resize reuses the same size rule
        pool.resize(3, 2)
