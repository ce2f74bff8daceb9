"""psycopg code runs unchanged on the handle (issue 32): attribute writes, their restore for the
next borrower, and psycopg_pool's ``_pool``. Against the real server."""

from __future__ import annotations

import gc

import psycopg
import pytest
from psycopg.rows import dict_row, namedtuple_row

from threadpool_db import ConnectionPool, PoolError
from threadpool_db.connection import writable_names


class _MyCursor(psycopg.ClientCursor):
    pass


class _MyServerCursor(psycopg.ServerCursor):
    pass


# a value for each writable name that differs from a fresh connection's
NEW_VALUES = {
    "autocommit": True,
    "isolation_level": psycopg.IsolationLevel.SERIALIZABLE,
    "read_only": True,
    "deferrable": True,
    "row_factory": dict_row,
    "cursor_factory": _MyCursor,
    "server_cursor_factory": _MyServerCursor,
    "prepare_threshold": 0,
    "prepared_max": 7,
}


def test_every_write_psycopg_takes_is_taken_and_undone_for_the_next_borrower(make_pool):
    assert set(writable_names()) == set(NEW_VALUES)  # derived from psycopg's class: a new one needs a test
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        before = {name: getattr(conn, name) for name in NEW_VALUES}
        for name, value in NEW_VALUES.items():
            setattr(conn, name, value)
            assert getattr(conn, name) == value, name
            assert getattr(conn.driver_connection, name) == value, name  # the connection's own
    with pool.connection() as conn:  # the same connection, as it was before the borrow
        assert {name: getattr(conn, name) for name in NEW_VALUES} == before


def test_row_factory_written_on_the_handle_shapes_rows_in_this_borrow_only(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.row_factory = dict_row
        assert conn.execute("SELECT 1 AS x").fetchone() == {"x": 1}
        with conn.cursor(row_factory=namedtuple_row) as cur:  # the cursor's own still wins
            assert cur.execute("SELECT 2 AS y").fetchone().y == 2
    with pool.connection() as conn:
        assert conn.execute("SELECT 1 AS x").fetchone() == (1,)


def test_settings_made_by_configure_are_what_the_return_restores(make_pool):
    pool = make_pool(min_size=1, max_size=1, configure=lambda raw: setattr(raw, "row_factory", dict_row))
    with pool.connection() as conn:
        assert conn.execute("SELECT 1 AS x").fetchone() == {"x": 1}
        conn.row_factory = namedtuple_row
    with pool.connection() as conn:
        assert conn.row_factory is dict_row


def test_the_raw_escape_hatch_is_restored_too(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.raw.row_factory = dict_row
        conn.raw.prepare_threshold = None
    with pool.connection() as conn:
        assert conn.execute("SELECT 1 AS x").fetchone() == (1,)
        assert conn.prepare_threshold == 5


def test_a_write_after_return_raises_the_dead_handle_error(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="w")
    conn = pool.getconn()
    pool.putconn(conn)
    for name, value in NEW_VALUES.items():
        with pytest.raises(PoolError, match="already returned to pool 'w'"):
            setattr(conn, name, value)
    with pool.connection() as nxt:
        assert nxt.row_factory is not dict_row


def test_an_unknown_name_is_refused_not_kept_or_forwarded(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        with pytest.raises(AttributeError, match="my_state"):
            conn.my_state = 1  # type: ignore[attr-defined]
        assert not hasattr(conn.driver_connection, "my_state")


def test_pool_is_the_pool_while_borrowed_and_after_return_never_a_weak_reference(dsn, app_name):
    pool = ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"application_name": app_name})
    try:
        conn = pool.getconn()
        assert conn._pool is pool
        pool.putconn(conn)
        assert conn._pool is pool  # Django's backend: connection._pool.putconn(connection)
    finally:
        pool.close()
    del pool
    gc.collect()
    assert conn._pool is None  # a kept dead handle does not keep its pool alive


def test_django_style_return_through_pool_attribute(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    conn._pool.putconn(conn)
    assert pool.stats()["in_use"] == 0
