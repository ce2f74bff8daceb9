"""Every wait a borrow makes is bounded by its deadline: a check takes at most the time the
borrower has left (never more than check_timeout), the deadline is tested again after a failed
check, and a check that times out sends the other idle connections due for a check to be tested
in the background (HikariCP's soft eviction) instead of lending them one by one.

The silent server is a proxy in "blackhole" mode: it keeps every socket open and forwards
nothing, as a partitioned network does (no reset, no error)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from threadpool_db import ConnectionPool, PoolTimeout
from threadpool_db.config import AUTO_CHECK_IDLE

from .helpers import wait_until
from .timing import JOIN, SETTLE, TIMEOUT_SLACK


def _silent_pool(pg, proxy, app_name: str, **kw) -> tuple[ConnectionPool, object]:
    """A pool of 4 through a proxy, filled, its connections idle past check="auto"'s window;
    then the proxy goes silent."""
    px = proxy(urlsplit(pg.url).port)
    kw.setdefault("check_timeout", 4.0)
    kw.setdefault("connect_timeout", 2)  # creators stuck connecting into the blackhole give up soon
    pool = ConnectionPool(px.url(pg.url), min_size=4, max_size=4, name="deadline",
                          kwargs={"application_name": app_name}, **kw)  # fmt: skip
    pool.wait(SETTLE)
    time.sleep(AUTO_CHECK_IDLE * 1.5)  # a duration is the condition: every idle one is due for a check
    px.mode = "blackhole"
    return pool, px


def _user_check(conn) -> None:
    conn.execute("SELECT 1").fetchall()
    conn.rollback()


@pytest.mark.parametrize("check", ["auto", _user_check], ids=["builtin", "callable"])
def test_a_check_on_a_silent_link_takes_at_most_the_borrowers_time_left(pg, proxy, app_name, check):
    """getconn(timeout=1) with 4 stale idle connections and check_timeout=4 used to block
    for about 16 s (one full check_timeout per connection); now it raises PoolTimeout at its
    deadline, and the other three are tested in the background, not lent."""
    pool, px = _silent_pool(pg, proxy, app_name, check=check)
    try:
        _borrow_times_out_then_heals(pool, px)
    finally:
        px.mode = "pass"
        pool.close()


def _borrow_times_out_then_heals(pool: ConnectionPool, px) -> None:
    try:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=1.0)
        took = time.monotonic() - t0
        assert took < 1.0 + TIMEOUT_SLACK, f"getconn(timeout=1) took {took:.1f} s with a silent server"
        assert "no connection available within 1 s" in str(info.value)
        # Soft eviction: the other idle ones left the idle set at once (no borrower gets one),
        # and are tested in the background; each fails its own check there.
        assert pool.stats()["idle"] == 0
        wait_until(lambda: pool.stats()["check_failed"] == 4, timeout=4.0 + SETTLE, what="all four tested")
    finally:
        px.mode = "pass"
    # After the heal the pool refills and lends again.
    with pool.connection(timeout=SETTLE) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_future_borrow_is_bounded_the_same_way(pg, proxy, app_name):
    """getconn_future validates a due connection in the caller's thread (admit): the same
    bound, the same background re-check of the others."""
    pool, px = _silent_pool(pg, proxy, app_name)
    try:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            pool.getconn_future(timeout=1.0).result(JOIN)
        took = time.monotonic() - t0
        assert took < 1.0 + TIMEOUT_SLACK, f"getconn_future(timeout=1) took {took:.1f} s with a silent server"
        assert pool.stats()["idle"] == 0
    finally:
        px.mode = "pass"
        pool.close()


def test_a_borrow_with_time_to_spare_gets_a_good_connection_after_a_timed_out_check(pg, proxy, app_name):
    """The soft eviction frees the borrower from testing the rest: once the link heals, a
    borrow that waits gets a fresh connection, not one of the stale ones one by one."""
    pool, px = _silent_pool(pg, proxy, app_name, check_timeout=0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.3)
        assert time.monotonic() - t0 < 0.3 + TIMEOUT_SLACK
        px.mode = "pass"  # heal: the background checks of the other three may still run
        conn = pool.getconn(timeout=SETTLE)
        try:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            pool.putconn(conn)
    finally:
        px.mode = "pass"
        pool.close()


def test_the_deadline_is_tested_again_after_a_failed_check(pg, proxy, app_name):
    """A check that fails slowly (0.8 s) on each of four stale connections: the borrow with
    1 s left does not go on to check the next ones past its deadline (the second check gets
    the 0.2 s left; the borrow raises PoolTimeout then)."""

    def slow_failing_check(conn) -> None:
        time.sleep(0.8)
        raise RuntimeError("this check always fails")

    px = proxy(urlsplit(pg.url).port)
    pool = ConnectionPool(px.url(pg.url), min_size=4, max_size=4, check=slow_failing_check, check_timeout=5.0,
                          kwargs={"application_name": app_name}, connect_timeout=2)  # fmt: skip
    try:
        pool.wait(SETTLE)
        time.sleep(AUTO_CHECK_IDLE * 1.5)
        px.mode = "blackhole"  # replacements cannot connect: only the stale ones are there to check
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=1.0)
        took = time.monotonic() - t0
        assert took < 1.0 + TIMEOUT_SLACK, f"getconn(timeout=1) took {took:.1f} s"
    finally:
        px.mode = "pass"
        pool.close()
