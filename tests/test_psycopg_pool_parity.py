"""psycopg_pool's behaviours that code written for it relies on (issue 32, items 5 and 6),
against the real server."""

from __future__ import annotations

import gc
import logging
import re
import threading
import warnings

import psycopg
import pytest

from threadpool_db import ConnectionPool, ConnectionReturned, NullConnectionPool, PoolClosed, PoolError, PoolTimeout
from threadpool_db.errors import BadReturn

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


def test_the_bad_return_warnings_name_libpqs_state(make_pool, caplog):
    """As psycopg_pool's messages: the state by libpq's name, so a log search finds either."""
    pool = make_pool(min_size=1, max_size=1)
    with caplog.at_level(logging.WARNING, logger="threadpool_db"):
        conn = pool.getconn()
        conn.execute("SELECT 1")  # a transaction left open
        pool.putconn(conn)
    assert any("INTRANS" in r.getMessage() and "rolled back" in r.getMessage() for r in caplog.records)
    with pool.connection() as conn:
        assert conn.info.transaction_status == 0  # IDLE: rolled back


def test_a_connection_discarded_at_its_return_is_warned_of_after_what_was_wrong(make_pool, caplog):
    """psycopg_pool's two lines for a return mid-query: the state (ACTIVE), then the discard of
    the closed connection (BAD). A connection its borrower closed is not warned of."""
    pool = make_pool(min_size=1, max_size=1)
    with caplog.at_level(logging.WARNING, logger="threadpool_db"):
        conn = pool.getconn()
        conn.pgconn.exec_(b"COPY (SELECT 1) TO STDOUT")  # a query still running
        pool.putconn(conn)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(lines) == 2 and "ACTIVE" in lines[0] and "BAD" in lines[1], lines
        caplog.clear()
        with pool.connection() as conn:
            conn.close()
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_lent_connection_collected_after_its_pool_closed_does_not_warn(dsn, app_name):
    """psycopg_pool marks its connections (``_pool``) so psycopg's ``__del__`` does not warn of
    one collected open; ours are marked too (psycopg_pool's test_putconn_wrong_pool)."""
    pool = ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"application_name": app_name})
    conn = pool.getconn()
    pool.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del conn, pool
        gc.collect()
    assert not [str(w.message) for w in caught if "deleted while still open" in str(w.message)]


def test_a_null_pool_borrow_served_by_a_connection_made_for_it_waits_zero(dsn, app_name):
    """requests_wait_ms is time spent queueing, as psycopg_pool's: its null pool connects in the
    borrower's thread, unqueued; ours connects in a worker, and that is no wait either."""
    with NullConnectionPool(dsn, max_size=2, kwargs={"application_name": app_name}) as pool:
        for _ in range(3):
            with pool.connection():
                pass
        stats = pool.get_stats()
        assert stats["requests_num"] == 3 and stats.get("requests_wait_ms", 0) == 0, stats


def test_a_borrow_that_timed_out_counts_its_wait_in_requests_wait_ms(make_pool):
    """psycopg_pool's requests_wait_ms is the time spent queueing, served or not."""
    pool = make_pool(min_size=1, max_size=1)
    before = pool.get_stats().get("requests_wait_ms", 0)
    with pool.connection():
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.3)
        with pytest.raises(PoolTimeout):
            pool.getconn_future(timeout=0.3).result(JOIN)
    assert pool.get_stats()["requests_wait_ms"] - before >= 2 * 250


# -- conn.close(): close_returns decides, as in psycopg_pool ----------------------------------------
def test_close_closes_the_connection_and_gives_the_slot_back(make_pool, pg, app_name):
    """close_returns=False (the default, psycopg_pool's): close() closes the connection on the
    server, the borrow ends (nothing leaks: a max_size=1 pool lends again), it counts in
    returns_bad, and the putconn or with-block end that psycopg_pool code writes after it is
    taken quietly."""
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    pid = conn.info.backend_pid
    conn.close()
    assert conn.closed
    pool.putconn(conn)  # psycopg_pool's close-then-putconn: accepted once
    wait_until(lambda: pid not in backends(pg.admin_url, app_name), what="the closed backend to go")
    with pool.connection(timeout=JOIN) as again:  # the slot came back: a new connection is lent
        assert again.info.backend_pid != pid
        again.close()  # the with block's end after it is quiet too
    assert pool.get_stats()["returns_bad"] == 2
    assert pool.stats()["in_use"] == 0


def test_close_returns_true_gives_the_connection_back_open(make_pool):
    pool = make_pool(min_size=1, max_size=1, close_returns=True)
    conn = pool.getconn()
    pid = conn.info.backend_pid
    conn.close()
    assert conn.closed  # the handle is done with
    pool.putconn(conn)  # accepted once, quietly
    with pool.connection(timeout=0.0) as again:  # idle at once: it was not closed
        assert again.info.backend_pid == pid
    assert "returns_bad" not in pool.get_stats()


def test_null_pool_counts_a_closed_return_as_bad(dsn, app_name):
    """The null pool closes what nobody waits for anyway; a close() by the borrower is still a
    bad return, as psycopg_pool counts it."""
    with NullConnectionPool(dsn, max_size=1, kwargs={"application_name": app_name}) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        with pool.connection() as conn:
            conn.close()
        assert pool.get_stats().get("returns_bad", 0) == 1


def test_null_pool_wait_is_not_a_request(dsn, app_name):
    """psycopg_pool's NullConnectionPool.wait() makes a connection without a request; ours
    borrows one to prove the database answers, and does not count it."""
    with NullConnectionPool(dsn, max_size=2, kwargs={"application_name": app_name}) as pool:
        pool.wait(timeout=JOIN)
        assert "requests_num" not in pool.get_stats()
        with pool.connection():
            pass
        assert pool.get_stats()["requests_num"] == 1


# -- putconn of what is not ours: a ValueError, as psycopg_pool's --------------------------------
def test_a_foreign_putconn_is_a_value_error_naming_both_pools(make_pool, dsn):
    a, b = make_pool(min_size=1, name="a"), make_pool(min_size=1, name="b")
    conn = a.getconn()
    with pytest.raises(ValueError, match=r"does not belong to pool 'b' \(it comes from pool 'a'\)") as e:
        b.putconn(conn)
    assert isinstance(e.value, BadReturn) and isinstance(e.value, PoolError)
    with psycopg.connect(dsn) as raw:
        with pytest.raises(ValueError, match="outside any pool"):
            b.putconn(raw)  # type: ignore[arg-type]
    a.putconn(conn)  # still a's to take back


def test_a_second_putconn_is_a_value_error_and_a_connection_returned(make_pool):
    pool = make_pool(min_size=1, name="twice")
    conn = pool.getconn()
    pool.putconn(conn)
    with pytest.raises(ValueError, match="already returned to pool 'twice'") as e:
        pool.putconn(conn)
    assert isinstance(e.value, ConnectionReturned)  # and a psycopg.OperationalError
    assert isinstance(e.value, psycopg.OperationalError)


# -- the log's words -------------------------------------------------------------------------------
def test_giving_up_logs_a_failed_reconnection_attempt(caplog):
    """psycopg_pool's wording, so a log alert written for it keeps matching."""

    def conninfo() -> str:
        raise RuntimeError("cannot build conninfo")

    with caplog.at_level(logging.WARNING, logger="threadpool_db"):
        pool = ConnectionPool(conninfo, min_size=1, reconnect_timeout=0.5, open=False, name="gone")
        try:
            pool.open()
            wait_until(lambda: [r for r in caplog.records if r.levelno == logging.ERROR], what="giving up")
        finally:
            pool.close()
    lines = [r.getMessage() for r in caplog.records if "reconnection attempt" in r.getMessage().lower()]
    assert len(lines) == 1 and "pool 'gone'" in lines[0] and "giving up" in lines[0], lines


# -- the stats' meanings ---------------------------------------------------------------------------
def test_null_pool_counts_as_queued_only_a_borrow_it_has_no_room_for(dsn, app_name):
    """psycopg_pool's null pool connects in the borrower's thread: a borrow a new connection
    serves is a request, not a queued one. One beyond max_size queues."""
    with NullConnectionPool(dsn, max_size=1, kwargs={"application_name": app_name}) as pool:
        held = pool.getconn()  # a connection made for it
        assert "requests_queued" not in pool.get_stats()
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.1)  # no room for another: queued, then timed out
        assert pool.get_stats()["requests_queued"] == 1
        pool.putconn(held)


def test_connections_num_counts_a_connect_as_it_begins(dsn):
    """As psycopg_pool's: an attempt still in flight is counted (a check that found every
    connection dead shows the reconnects at once, not when they end)."""
    started, release = threading.Event(), threading.Event()

    def connect() -> psycopg.Connection:
        started.set()
        release.wait(JOIN)
        return psycopg.connect(dsn)

    pool = ConnectionPool(connect=connect, min_size=1, max_size=1, name="slow-connect")
    try:
        assert started.wait(JOIN)
        assert pool.get_stats()["connections_num"] == 1  # begun, not ended
        assert pool.stats()["created"] == 0
        release.set()
        pool.wait(timeout=JOIN)
        assert pool.get_stats()["connections_num"] == 1  # counted once
    finally:
        release.set()
        pool.close()


def test_open_left_to_its_default_warns_on_the_first_borrow_as_psycopg_pools(dsn, app_name):
    """psycopg_pool's default for ``open`` is to become False, and ours follows it: a pool that
    opened because ``open`` was not given warns once, on its first borrow; one given ``open``,
    or entered as a with block, does not."""
    kwargs = {"application_name": app_name}
    for cls in (ConnectionPool, NullConnectionPool):
        with pytest.warns(DeprecationWarning, match="'open' parameter will become 'False'"):
            pool = cls(dsn, kwargs=kwargs)
            try:
                with pool.connection():
                    pass
            finally:
                pool.close()
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            for pool in (cls(dsn, kwargs=kwargs, open=True), cls(dsn, kwargs=kwargs, open=False)):
                pool.open()
                try:
                    with pool.connection():
                        pass
                finally:
                    pool.close()
            with cls(dsn, kwargs=kwargs) as pool:
                with pool.connection():
                    pass


def test_defaults_are_psycopg_pools(dsn):
    """Code moved over from psycopg_pool keeps its pace (docs/api.md: why)."""
    for cls in (ConnectionPool, NullConnectionPool):
        pool = cls(dsn, open=False)
        assert (pool.max_lifetime, pool.num_workers, pool.max_idle, pool.timeout) == (3600.0, 3, 600.0, 30.0), cls
        assert pool.close_returns is False
