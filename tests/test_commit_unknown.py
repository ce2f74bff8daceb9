"""A COMMIT lost in flight says so: CommitOutcomeUnknown (a psycopg.OperationalError, the
driver's error chained), told apart from a failure before COMMIT was sent and from an error the
server answered the COMMIT with. COMMIT is made slow by a deferred constraint trigger that
sleeps; the link is cut by a proxy while it runs."""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest

from threadpool_db import CommitOutcomeUnknown, ConnectionPool

from .helpers import sql, wait_until
from .timing import JOIN, SETTLE

SLOW_COMMIT = 3.0  # seconds the deferred trigger sleeps at COMMIT


@pytest.fixture
def slow_table(pg):
    """A table whose rows make COMMIT sleep (a deferred constraint trigger)."""
    name = f"slow_{uuid.uuid4().hex[:8]}"
    sql(pg.url, f"""
        CREATE TABLE {name} (id int PRIMARY KEY, v int DEFAULT 0 CHECK (v >= 0) );
        CREATE FUNCTION {name}_sleep() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN
                IF NEW.id > 0 THEN PERFORM pg_sleep({SLOW_COMMIT}); END IF;
                IF NEW.id = -4 THEN RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001'; END IF;
                RETURN NULL;
            END $$;
        CREATE CONSTRAINT TRIGGER {name}_slow AFTER INSERT ON {name} DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION {name}_sleep();
    """)  # fmt: skip
    yield name
    sql(pg.url, f"DROP TABLE {name}; DROP FUNCTION {name}_sleep()")


def _pool(pg, proxy, app_name):
    px = proxy(urlsplit(pg.url).port)
    pool = ConnectionPool(px.url(pg.url), min_size=1, max_size=2, name="commit",
                          kwargs={"application_name": app_name})  # fmt: skip
    pool.wait(SETTLE)
    return pool, px


def _cut_during_commit(pg, px, app_name: str) -> threading.Thread:
    """Cut every proxied connection once a backend of ours sits in the trigger's sleep."""

    def cut() -> None:
        wait_until(lambda: sql(pg.admin_url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                             "AND query LIKE 'COMMIT%%'", (app_name,))[0][0] == 1,
                   what="COMMIT running")  # fmt: skip
        px.drop_all()

    t = threading.Thread(target=cut)
    t.start()
    return t


def test_conn_commit_lost_in_flight_says_the_outcome_is_unknown(pg, proxy, app_name, slow_table):
    pool, px = _pool(pg, proxy, app_name)
    try:
        conn = pool.getconn()
        conn.execute(f"INSERT INTO {slow_table} (id) VALUES (1)")
        cutter = _cut_during_commit(pg, px, app_name)
        with pytest.raises(CommitOutcomeUnknown) as info:
            conn.commit()
        cutter.join(JOIN)
        assert not cutter.is_alive()
        assert isinstance(info.value, psycopg.OperationalError)
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        assert "may or may not have been committed" in str(info.value)
        pool.putconn(conn)  # broken: discarded
    finally:
        pool.close()


def test_the_with_blocks_commit_lost_in_flight_says_so_too(pg, proxy, app_name, slow_table):
    pool, px = _pool(pg, proxy, app_name)
    try:
        cutter = _cut_during_commit(pg, px, app_name)
        with pytest.raises(CommitOutcomeUnknown):
            with pool.connection() as conn:
                conn.execute(f"INSERT INTO {slow_table} (id) VALUES (2)")
        cutter.join(JOIN)
        assert not cutter.is_alive()
        # The pool lends a good connection afterwards.
        wait_until(lambda: pool.stats()["size"] >= 1, what="refilled")
        with pool.connection(timeout=SETTLE) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_a_connection_broken_before_commit_raises_the_drivers_error(pg, proxy, app_name, slow_table):
    """Nothing was sent: the transaction certainly did not commit; not 'unknown'."""
    pool, px = _pool(pg, proxy, app_name)
    try:
        conn = pool.getconn()
        conn.execute(f"INSERT INTO {slow_table} (id) VALUES (-3)")
        px.drop_all()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # libpq learns the link is gone
        with pytest.raises(psycopg.OperationalError) as info:
            conn.commit()
        assert not isinstance(info.value, CommitOutcomeUnknown)
        pool.putconn(conn)
    finally:
        pool.close()


def test_an_error_the_server_answers_commit_with_is_not_unknown(make_pool, slow_table):
    """A serialization failure at COMMIT (an OperationalError too): the server said no, the
    outcome is known, and the connection is fine."""
    pool = make_pool(min_size=1)
    conn = pool.getconn()
    try:
        conn.execute(f"INSERT INTO {slow_table} (id) VALUES (-4)")
        with pytest.raises(psycopg.errors.SerializationFailure) as info:
            conn.commit()
        assert not isinstance(info.value, CommitOutcomeUnknown)
        assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.putconn(conn)


def test_a_commit_that_went_through_is_not_touched(make_pool, slow_table):
    pool = make_pool(min_size=1)
    t0 = time.monotonic()
    with pool.connection() as conn:
        conn.execute(f"INSERT INTO {slow_table} (id) VALUES (6)")
    assert time.monotonic() - t0 >= SLOW_COMMIT * 0.9  # the trigger ran at COMMIT
    with pool.connection() as conn:
        assert conn.execute(f"SELECT id FROM {slow_table}").fetchall() == [(6,)]


def test_a_transaction_blocks_commit_lost_in_flight_says_so_too(pg, proxy, app_name, slow_table):
    """``with conn.transaction():`` (the outermost block) sends COMMIT as it ends well."""
    pool, px = _pool(pg, proxy, app_name)
    try:
        conn = pool.getconn()
        cutter = _cut_during_commit(pg, px, app_name)
        with pytest.raises(CommitOutcomeUnknown) as info:
            with conn.transaction():
                conn.execute(f"INSERT INTO {slow_table} (id) VALUES (7)")
        cutter.join(JOIN)
        assert not cutter.is_alive()
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        pool.putconn(conn)  # broken: discarded
    finally:
        pool.close()


def test_an_error_inside_a_transaction_block_is_not_a_lost_commit(pg, proxy, app_name, slow_table):
    """The body failed (the link cut under a statement): nothing was committed, and the
    driver's own error says so."""
    pool, px = _pool(pg, proxy, app_name)
    try:
        conn = pool.getconn()
        with pytest.raises(psycopg.OperationalError) as info:
            with conn.transaction():
                conn.execute(f"INSERT INTO {slow_table} (id) VALUES (-8)")
                px.drop_all()
                conn.execute("SELECT 1")
        assert not isinstance(info.value, CommitOutcomeUnknown)
        pool.putconn(conn)
    finally:
        pool.close()
