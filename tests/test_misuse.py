"""Misbehaving callbacks and misuse: a clear, specific error each, and the pool stays healthy."""

from __future__ import annotations

import logging
import time

import pytest

from threadpool_db import PoolClosed, PoolError, PoolTimeout

from .helpers import times_out, wait_until
from .timing import SETTLE


def test_configure_that_raises_is_reported_and_the_pool_recovers(make_pool):
    calls: list[int] = []

    def configure(conn):
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("configure exploded")

    pool = make_pool(min_size=1, max_size=1, configure=configure, wait=False)
    with pool.connection(timeout=SETTLE) as conn:  # the third attempt succeeds
        conn.execute("SELECT 1")
    s = pool.stats()
    assert s["create_errors"] == 2 and s["size"] == 1


def test_configure_that_leaves_a_transaction_open_is_refused_clearly(make_pool):
    pool = make_pool(min_size=0, max_size=1, configure=lambda c: c.execute("SELECT 1"), wait=False)
    with pytest.raises(PoolTimeout, match="configure callback left the connection in a transaction"):
        pool.getconn(timeout=1.0)
    assert pool.stats()["size"] == 0


def test_check_that_hangs_is_bounded_by_check_timeout(make_pool, caplog):
    def check(conn):
        time.sleep(30)

    caplog.set_level(logging.INFO, logger="threadpool_db")
    pool = make_pool(min_size=1, max_size=1, check=check, check_timeout=0.3)
    with times_out(1.0, match="no connection available"):
        pool.getconn(timeout=1.0)
    assert pool.stats()["check_failed"] >= 1
    assert any("did not finish within check_timeout=0.3 s" in r.getMessage() for r in caplog.records)


def test_check_that_raises_discards_and_the_borrow_goes_on(make_pool):
    bad = {"n": 0}

    def check(conn):
        if bad["n"] < 1:
            bad["n"] += 1
            raise RuntimeError("not today")

    pool = make_pool(min_size=1, max_size=1, check=check)
    with pool.connection(timeout=SETTLE) as conn:
        conn.execute("SELECT 1")
    assert pool.stats()["check_failed"] == 1


def test_reset_that_raises_on_a_real_connection_discards_it(make_pool):
    def reset(conn):
        raise RuntimeError("reset failed")

    pool = make_pool(min_size=1, max_size=1, reset=reset)
    c = pool.getconn()
    pid = c.info.backend_pid
    pool.putconn(c)  # no exception for the caller: logged, discarded, replaced
    with pool.connection(timeout=SETTLE) as conn:
        assert conn.info.backend_pid != pid
    assert pool.stats()["reset_failed"] >= 1


def test_misuse_each_gets_a_specific_error_and_the_pool_stays_healthy(make_pool):
    pool = make_pool(min_size=2, max_size=2)
    other = make_pool(min_size=1, max_size=1, name="other")
    c = pool.getconn()
    with pytest.raises(PoolError, match="does not belong"):
        other.putconn(c)
    with pytest.raises(PoolError, match="does not belong"):
        pool.putconn(object())  # type: ignore[arg-type]
    pool.putconn(c)
    with pytest.raises(PoolError, match="already returned"):
        pool.putconn(c)
    with pytest.raises(PoolError, match="already returned"):
        c.execute("SELECT 1")
    with pool.connection() as conn:  # still healthy
        conn.execute("SELECT 1")
    s = pool.stats()
    assert s["size"] == 2 and s["idle"] == 2 and s["in_use"] == 0
    out = pool.getconn()
    pool.close()
    with pytest.raises(PoolClosed):
        pool.getconn()
    pool.putconn(out)  # closed quietly, as psycopg_pool
    wait_until(lambda: pool.stats()["size"] == 0, what="all closed")


def test_using_a_returned_connection_names_where_it_was_borrowed_and_returned(make_pool, recorder, with_methods):
    """Through the with idiom (the return passes three of our frames) and by hand: both sites
    are the user's lines, for the handle and for a cursor taken from it."""
    from .helpers import line_of

    me = test_using_a_returned_connection_names_where_it_was_borrowed_and_returned
    here = __file__
    pool = make_pool(min_size=1, max_size=1, name="sites")
    with pool.connection() as conn:  # BORROW-WITH
        cur = conn.cursor()
    # the with block's end is the return; Python reports it at the with line
    with pytest.raises(PoolError) as ei:
        conn.execute("SELECT 1")
    borrowed = f"{here}:{line_of(me, '# BORROW-WITH')}"
    assert f"already returned to pool 'sites' (borrowed at {borrowed}, returned at {borrowed})" in str(ei.value)
    with pytest.raises(PoolError) as ei2:
        cur.execute("SELECT 1")
    assert f"borrowed at {borrowed}, returned at {borrowed}" in str(ei2.value)

    conn = pool.getconn()  # BORROW-HAND
    pool.putconn(conn)  # RETURN-HAND
    with pytest.raises(PoolError) as ei3:
        pool.putconn(conn)
    assert (f"(borrowed at {here}:{line_of(me, '# BORROW-HAND')}, returned at {here}:{line_of(me, '# RETURN-HAND')})"
            in str(ei3.value))  # fmt: skip


def test_with_leak_detection_off_a_returned_connection_still_says_what_is_wrong(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="nosites", leak_threshold=None)
    conn = pool.getconn()
    pool.putconn(conn)
    with pytest.raises(PoolError, match=r"already returned to pool 'nosites'; it cannot be used or returned again"):
        conn.execute("SELECT 1")
