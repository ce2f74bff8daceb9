"""Never one connection in two threads: everything taken through the handle dies with it.
Against the real server, one test per kind of object the handle hands out."""

from __future__ import annotations

import psycopg
import psycopg2
import pytest

from threadpool_db import PoolError

from .helpers import wait_until
from .timing import SETTLE

STALE = r"went back to pool 'cur'"


def test_the_issue_snippet_raises_instead_of_writing_into_the_next_transaction(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="cur")
    c = pool.getconn()
    cur = c.cursor()
    res = c.execute("select 1")
    pool.putconn(c)
    other = pool.getconn()  # another request now owns the connection
    try:
        other.execute("begin")
        other.execute("create temp table t(x int)")
        with pytest.raises(PoolError, match=STALE) as ei:
            cur.execute("insert into t values (42)")  # the first request's stale cursor
        assert "taken at" in str(ei.value) and "test_cursors.py" in str(ei.value)
        # leak detection is on by default, so the borrow site is known: the message names it
        assert f"borrowed at {__file__}:" in str(ei.value)
        assert other.execute("select x from t").fetchall() == []  # nothing was written
        with pytest.raises(PoolError, match=STALE):
            res.execute("select 2").fetchone()  # the result cursor too
        with pytest.raises(PoolError, match=STALE):
            res.fetchall()
    finally:
        other.rollback()
        pool.putconn(other)


def test_a_cursor_inside_a_with_block_dies_at_its_end(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="cur")
    with pool.connection() as conn:
        cur = conn.cursor()
        assert cur.execute("SELECT 7").fetchone() == (7,)
        assert cur.connection is conn  # the handle, never the driver's connection
        rows = list(conn.execute("SELECT generate_series(1, 3)"))
        assert rows == [(1,), (2,), (3,)]
    with pytest.raises(PoolError, match=STALE):
        cur.execute("SELECT 1")
    with pytest.raises(PoolError, match=STALE):
        iter(cur)


def test_named_cursors_die_and_are_closed_on_the_server(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="cur")
    conn = pool.getconn()
    pid = conn.info.backend_pid
    held = conn.cursor("held_over", withhold=True)  # survives a commit/rollback on the server
    held.execute("SELECT generate_series(1, 100)")
    assert held.fetchone() == (1,)
    conn.commit()
    plain = conn.cursor("plain")
    plain.execute("SELECT generate_series(1, 10)")
    pool.putconn(conn)
    with pytest.raises(PoolError, match=STALE):
        held.fetchone()
    with pytest.raises(PoolError, match=STALE):
        plain.fetchmany(2)
    with pool.connection() as nxt:  # same connection: nothing left open on the server
        assert nxt.info.backend_pid == pid
        assert nxt.execute("SELECT name FROM pg_cursors").fetchall() == []


def test_transaction_pipeline_copy_and_notifies_die_with_the_handle(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="cur")
    conn = pool.getconn()
    conn.autocommit = True
    tx = conn.transaction()
    pipe = conn.pipeline()
    copy = conn.cursor().copy("COPY (SELECT 1) TO STDOUT")
    notes = conn.notifies(timeout=0.1)
    pool.putconn(conn)
    with pytest.raises(PoolError, match=STALE):
        with tx:
            pass
    with pytest.raises(PoolError, match=STALE):
        with pipe:
            pass
    with pytest.raises(PoolError, match=STALE):
        with copy:
            pass
    with pytest.raises(PoolError, match=STALE):
        next(notes)
    with pool.connection() as nxt:  # the connection is fine for the next borrower
        assert nxt.execute("SELECT 1").fetchone() == (1,)


def test_guarded_objects_work_while_borrowed(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="cur")
    with pool.connection() as conn:
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE g (x int)")
        with conn.cursor() as cur:
            with cur.copy("COPY g (x) FROM STDIN") as cp:
                cp.write_row((1,))
                cp.write_row((2,))
            assert cur.execute("SELECT sum(x) FROM g").fetchone() == (3,)
        with conn.pipeline():
            conn.execute("INSERT INTO g VALUES (3)")
        named = conn.cursor("n")
        named.execute("SELECT x FROM g ORDER BY x")
        assert [r[0] for r in named] == [1, 2, 3]


def test_a_reclaimed_connections_cursor_says_it_was_reclaimed(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="cur", leak_threshold=0.2, reclaim_leaked=True,
                     reclaim_factor=1.0, capture_stacks="full")  # fmt: skip
    conn = pool.getconn()
    cur = conn.cursor()
    wait_until(lambda: pool.stats()["leaks_reclaimed"] == 1, timeout=SETTLE, what="the reclaim")
    with pytest.raises(PoolError, match="reclaimed as leaked") as ei:
        cur.execute("SELECT 1")
    assert "borrowed at" in str(ei.value) and "test_cursors.py" in str(ei.value)


def test_generic_dbapi_driver_cursors_die_too(make_pool, dsn):
    pool = make_pool(connect=lambda: psycopg2.connect(dsn), min_size=1, max_size=1, name="cur")
    conn = pool.getconn()
    cur = conn.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
    pool.putconn(conn)
    with pytest.raises(PoolError, match=STALE):
        cur.execute("SELECT 2")
    with pytest.raises(PoolError, match=STALE):
        cur.fetchall()


def test_the_raw_connection_stays_the_unguarded_escape_hatch(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="cur")
    conn = pool.getconn()
    raw_cur = conn.raw.cursor()  # documented: not guarded
    pool.putconn(conn)
    assert raw_cur.execute("SELECT 1").fetchone() == (1,)
    assert isinstance(raw_cur, psycopg.Cursor)


def test_a_generic_drivers_cursor_reads_closed_after_the_return(make_pool, dsn):
    pool = make_pool(connect=lambda: psycopg2.connect(dsn), min_size=1, max_size=1, name="cur")
    conn = pool.getconn()
    cur = conn.cursor()
    assert not cur.closed
    pool.putconn(conn)
    assert cur.closed and conn.closed  # no error: only using it raises
