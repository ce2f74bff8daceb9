"""psycopg code runs unchanged on the handle (issue 32): attribute writes, their restore for the
next borrower, and psycopg_pool's ``_pool``. Against the real server."""

from __future__ import annotations

import contextlib
import gc
import weakref
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row, namedtuple_row

from threadpool_db import ConnectionPool, ConnectionReturned, PoolError
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


def test_the_borrowers_own_attributes_stay_on_the_handle(make_pool):
    """Any other name can be set, as on a psycopg connection; it lives on the handle, never on
    the connection, so the next borrower does not see it."""
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.my_state = 1  # type: ignore[attr-defined]
        assert conn.my_state == 1  # type: ignore[attr-defined]
        assert not hasattr(conn.driver_connection, "my_state")
    assert conn.my_state == 1  # type: ignore[attr-defined]  # kept, as a closed psycopg connection keeps its own
    with pool.connection() as nxt:
        assert not hasattr(nxt, "my_state")


def test_a_returned_handle_reads_its_settings_as_the_borrower_left_them(make_pool):
    """As a closed psycopg connection reads its own (psycopg_pool's tests read
    ``conn.autocommit`` after the pool closed); the next borrower still gets configure's."""
    pool = make_pool(min_size=1, max_size=1, configure=lambda raw: setattr(raw, "row_factory", dict_row))
    with pool.connection() as conn:
        pass
    assert conn.row_factory is dict_row and conn.autocommit is False  # nothing written: configure's
    with pool.connection() as conn:
        for name, value in NEW_VALUES.items():
            setattr(conn, name, value)
    for name, value in NEW_VALUES.items():
        assert getattr(conn, name) == value, name
    with pytest.raises(ConnectionReturned):
        conn.autocommit = False  # reading is all a returned handle allows
    with pool.connection() as nxt:
        assert nxt.autocommit is False and nxt.row_factory is dict_row and nxt.prepared_max != 7


def test_a_rollback_replaced_on_the_handle_is_the_one_the_return_calls(make_pool, monkeypatch):
    """psycopg_pool ends a returned transaction with ``conn.rollback()``: a test that patches it
    (here, to make it fail) sees the pool call it, and a failed rollback discards the connection."""
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    pid = conn.info.backend_pid
    calls = []
    original = conn.rollback

    def failing_rollback() -> None:
        calls.append(pid)
        conn.pgconn.finish()
        original()

    monkeypatch.setattr(conn, "rollback", failing_rollback)
    conn.execute("SELECT 1")  # a transaction left open
    pool.putconn(conn)
    assert calls == [pid]
    assert pool.stats()["reset_failed"] == 1
    with pool.connection() as nxt:
        assert nxt.info.backend_pid != pid


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


# -- psycopg's objects, to psycopg code --------------------------------------------------------
@pytest.mark.parametrize("factory", [psycopg.Cursor, psycopg.ClientCursor, psycopg.RawCursor, _MyCursor])
def test_cursors_are_instances_of_the_factory_in_use(make_pool, factory):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.cursor_factory = factory
        cur = conn.cursor()
        assert isinstance(cur, factory) and isinstance(cur, psycopg.Cursor)
        assert cur.connection is conn  # the handle, never the driver's connection
        query = "SELECT $1::int" if factory is psycopg.RawCursor else "SELECT %s::int"
        assert cur.execute(query, [5]).fetchone() == (5,)
        assert isinstance(conn.execute(query, [6]), factory)
        ref = weakref.ref(cur)
        assert ref() is cur
        cur.execute("SELECT generate_series(1, 2)")
        assert next(cur) == (1,) and next(cur) == (2,)
        cur.arraysize = 3  # the cursor's writable attributes
        cur.row_factory = dict_row
        assert cur.execute("SELECT 7 AS x").fetchmany() == [{"x": 7}]
        if not isinstance(cur, psycopg.ClientCursor):  # (a client-side cursor has no binary results)
            cur.format = psycopg.pq.Format.BINARY
            assert cur.execute("SELECT 7::int").fetchone() == {"int4": 7}


def test_named_cursor_is_the_server_cursor_factory_in_use(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.server_cursor_factory = _MyServerCursor
        cur = conn.cursor("c1")
        assert isinstance(cur, _MyServerCursor) and isinstance(cur, psycopg.ServerCursor)
        cur.itersize = 2
        cur.execute("SELECT generate_series(1, 5)")
        assert list(cur) == [(1,), (2,), (3,), (4,), (5,)]
        cur.close()


def test_rollback_of_a_transaction_taken_through_the_handle(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.autocommit = True
        conn.execute("CREATE TEMP TABLE rb (x int)")
        with conn.transaction() as tx:
            assert isinstance(tx, psycopg.Transaction) and tx.connection is conn
            conn.execute("INSERT INTO rb VALUES (1)")
            raise psycopg.Rollback(tx)  # psycopg's own: the block ends, rolled back, quietly
        with conn.transaction():
            with conn.transaction() as inner:
                conn.execute("INSERT INTO rb VALUES (2)")
                raise psycopg.Rollback(inner)
            conn.execute("INSERT INTO rb VALUES (3)")
        assert conn.execute("SELECT x FROM rb").fetchall() == [(3,)]


def test_a_re_entered_pipeline_is_the_same_object(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        with conn.pipeline() as outer:
            assert isinstance(outer, psycopg.Pipeline)
            with conn.pipeline() as inner:
                assert inner is outer
                cur = conn.execute("SELECT 1")
            outer.sync()
            assert cur.fetchone() == (1,)


def test_str_shows_the_status_as_psycopg_does_and_no_password(make_pool, dsn):
    pool = make_pool(min_size=1, max_size=1, name="s")
    password = urlsplit(dsn).password
    with pool.connection() as conn:
        assert "[IDLE]" in str(conn) and "pool='s'" in repr(conn)
        conn.execute("SELECT 1")
        assert "[INTRANS]" in str(conn)
        assert password and password not in repr(conn)
    assert "[RETURNED]" in repr(conn)


def test_use_after_return_is_an_operational_error_naming_both_sites(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="gone")
    conn = pool.getconn()
    cur = conn.cursor()
    cur.execute("SELECT generate_series(1, 3)")
    named = conn.cursor("n")
    pool.putconn(conn)
    assert conn.closed and cur.closed and named.closed  # read without raising
    for use in (lambda: conn.execute("SELECT 1"), cur.fetchone, lambda: next(cur), lambda: cur.execute("SELECT 1")):
        with pytest.raises(psycopg.OperationalError) as ei:
            use()
        assert isinstance(ei.value, ConnectionReturned)
        assert "pool 'gone'" in str(ei.value)
        assert f"borrowed at {__file__}:" in str(ei.value) and f"returned at {__file__}:" in str(ei.value)
    cur.close()  # closing what went with the connection is a no-op, as psycopg's on a closed one
    named.close()
    with pytest.raises(ConnectionReturned, match="already returned"):
        pool.putconn(conn)


def test_adapters_registered_in_a_borrow_go_at_its_return(make_pool):
    class Shout(psycopg.adapt.Loader):
        def load(self, data):
            return bytes(data).decode().upper()

    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.adapters.register_loader("text", Shout)
        assert conn.execute("SELECT 'hi'::text").fetchone() == ("HI",)
    with pool.connection() as conn:  # the same connection, with the map connect gave it
        assert conn.execute("SELECT 'hi'::text").fetchone() == ("hi",)


def test_adapters_registered_by_configure_stay(make_pool):
    class Shout(psycopg.adapt.Loader):
        def load(self, data):
            return bytes(data).decode().upper()

    pool = make_pool(min_size=1, max_size=1, configure=lambda raw: raw.adapters.register_loader("text", Shout))
    for _ in range(2):
        with pool.connection() as conn:
            assert conn.execute("SELECT 'hi'::text").fetchone() == ("HI",)
            conn.adapters.register_loader("text", psycopg.types.string.TextLoader)


def test_notify_handlers_added_in_a_borrow_go_at_its_return(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    seen: list[str] = []
    with pool.connection() as conn:
        conn.autocommit = True
        conn.add_notify_handler(lambda n: seen.append(n.payload))
        conn.add_notice_handler(lambda d: seen.append("notice"))
        conn.execute("LISTEN ch")
        conn.execute("NOTIFY ch, 'first'")
    assert seen == ["first"]
    with pool.connection() as conn:  # the same connection: the callbacks are gone
        conn.autocommit = True
        conn.execute("LISTEN ch")
        conn.execute("NOTIFY ch, 'second'")
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello'; END $$")
        assert seen == ["first"]
        assert [n.payload for n in conn.notifies(timeout=0.5, stop_after=1)] == ["second"]


def test_a_two_phase_transaction_left_behind_is_not_the_next_borrowers(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    conn.tpc_begin(conn.xid(1, "left", "behind"))
    conn.execute("SELECT 1")
    with contextlib.suppress(psycopg.NotSupportedError):  # (disabled on the test server)
        conn.tpc_prepare()  # the status is IDLE again, psycopg still in the two-phase transaction
    pool.putconn(conn)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
        conn.rollback()  # psycopg refuses this inside a two-phase transaction
