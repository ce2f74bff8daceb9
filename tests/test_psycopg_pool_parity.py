"""psycopg_pool's behaviours that code written for it relies on (issue 32, items 5 and 6),
against the real server."""

from __future__ import annotations

import logging

from .helpers import backends, wait_until


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
