"""psycopg_pool's behaviours that code written for it relies on (issue 32, items 5 and 6),
against the real server."""

from __future__ import annotations

import logging
import re
import threading

import pytest

from threadpool_db import NullConnectionPool, PoolClosed

from .helpers import backends, wait_until
from .timing import JOIN


def test_putconn_into_a_closed_pool_closes_the_connection_quietly(make_pool, pg, app_name, caplog):
    """As psycopg_pool: no exception, the connection is closed on the server, and a handle
    given back by the with block's exit or by hand ends the same way. Django's backend returns
    connections into a pool it closed itself (close_pool() on a settings change)."""
    pool = make_pool(min_size=2, max_size=2)
    by_hand, in_block = pool.getconn(), pool.getconn()
    pids = {by_hand.info.backend_pid, in_block.info.backend_pid}
    pool.close()
    with caplog.at_level(logging.WARNING, logger="threadpool_db"):
        pool.putconn(by_hand)
        with in_block:
            in_block.execute("SELECT 1")
    assert by_hand.closed and in_block.closed
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    wait_until(lambda: not pids & set(backends(pg.admin_url, app_name)), what="both backends closed")
    assert pool.stats()["size"] == 0


def test_a_nested_borrow_that_a_new_connection_will_serve_is_not_warned_of(make_pool, caplog):
    """The deadlock warning is for a waiter only a return can serve. With room to grow, the
    second borrow waits for a connection being made: counted as nested, not warned of."""
    pool = make_pool(min_size=1, max_size=2, leak_threshold=30.0)
    with caplog.at_level(logging.WARNING, logger="threadpool_db"):
        with pool.connection() as first:
            with pool.connection() as second:  # waits for the second connection's connect
                assert second.info.backend_pid != first.info.backend_pid
    assert pool.stats()["nested_borrows"] == 1
    assert not [r for r in caplog.records if "deadlock" in r.getMessage()]


def test_getconn_after_close_says_already_closed(make_pool):
    pool = make_pool(min_size=1, name="shut")
    pool.close()
    with pytest.raises(PoolClosed, match=re.escape("pool 'shut' is already closed")):
        pool.getconn()
    with pytest.raises(PoolClosed, match="is already closed"):
        pool.getconn_future()


def test_null_pool_resets_a_connection_only_when_it_is_lent_again(dsn, app_name):
    """psycopg_pool's NullConnectionPool: a return that goes straight to a waiting borrower is
    reset once; one that is closed (nobody waiting) is not reset at all."""
    resets: list[int] = []
    got: list[int] = []
    with NullConnectionPool(dsn, max_size=1, kwargs={"application_name": app_name},
                            reset=lambda c: resets.append(c.info.backend_pid)) as pool:  # fmt: skip
        held = pool.getconn()
        pid = held.info.backend_pid
        worker = threading.Thread(target=lambda: got.append(_borrow_pid(pool)), daemon=True)
        worker.start()
        wait_until(lambda: pool.stats()["waiting"] == 1, what="a waiter")
        pool.putconn(held)  # handed to the waiter: reset once
        worker.join(JOIN)
        assert not worker.is_alive()
        assert got == [pid]  # the same connection, lent again
        assert resets == [pid]
        pool.wait()  # one more borrow and return, nobody waiting: closed, not reset
    assert resets == [pid]


def _borrow_pid(pool: NullConnectionPool) -> int:
    with pool.connection() as conn:  # returned with nobody waiting: closed without a reset
        return conn.info.backend_pid
