"""threadpool_db as a drop-in for psycopg_pool's ConnectionPool, against the real server: the
bugs found when it was tried as one, and psycopg_pool's API on ours."""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
import warnings
import weakref
from typing import TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from threadpool_db import (
    ConnectionPool,
    NullConnectionPool,
    PoolClosed,
    PooledConnection,
    PoolError,
    PoolTimeout,
    TooManyRequests,
    TooManyWaiters,
)

from .helpers import backends, in_child, interrupt_after, run_threads, sql, times_out, wait_until
from .timing import JOIN, SETTLE, SHORT_TIMEOUT


# -- the bugs -------------------------------------------------------------------------------
def test_with_block_that_handled_a_connection_loss_exits_quietly(make_pool, dsn):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.commit()
        sql(dsn, "SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: not sql(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
                   what="the backend to exit")  # fmt: skip
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError:
            pass  # handled by the body: the exit must not raise on the dead connection
    s = pool.stats()
    assert s["in_use"] == 0 and s["discarded_broken"] == 1
    with pool.connection(timeout=SETTLE) as conn:  # replaced
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_connect_factory_returning_psycopg_connections_gets_the_psycopg_reset(make_pool, dsn):
    class MyConnection(psycopg.Connection):  # a subclass must be recognised too
        pass

    pool = make_pool(connect=lambda: MyConnection.connect(dsn), min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    with pool.connection() as conn:
        assert conn.read_only is None and conn.isolation_level is None
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("off",)
    assert pool._connector.driver.name == "psycopg"


def test_a_check_that_always_fails_does_not_storm_the_server(make_pool):
    calls = []

    def bad_check(conn):
        calls.append(time.monotonic())
        raise RuntimeError("check says no")

    pool = make_pool(min_size=0, max_size=2, check=bad_check, wait=False)
    t0 = time.monotonic()
    with times_out(1.0):
        pool.getconn(timeout=1.0)
    took = time.monotonic() - t0
    created = pool.stats()["created"]
    # 131 connections in 1 s before the fix; with backoff 0.1, 0.2, 0.4 ... a handful
    assert created <= 8, f"{created} connections in {took:.1f} s"
    assert len(calls) <= 8


def test_interrupt_while_waiting_gives_the_place_back(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    with pytest.raises(KeyboardInterrupt), interrupt_after(0.2):
        pool.getconn(timeout=SETTLE)
    assert pool.stats()["waiting"] == 0
    pool.putconn(held)  # goes to idle, not to a ghost waiter
    s = pool.stats()
    assert s["idle"] == 1 and s["in_use"] == 0
    pool.putconn(pool.getconn(timeout=1.0))


def test_interrupt_after_the_grant_gives_the_connection_back(make_pool):
    """The grant and the interrupt race: the signal handler returns the held connection
    (granting it to the waiting main thread) and then raises, as Ctrl-C could."""
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    # the handler hands `held` to the waiter (the main thread, inside getconn), then raises
    with pytest.raises(KeyboardInterrupt), interrupt_after(0.2, lambda: pool.putconn(held)):
        pool.getconn(timeout=SETTLE)
    s = pool.stats()
    assert s["in_use"] == 0 and s["idle"] == 1 and s["waiting"] == 0
    pool.putconn(pool.getconn(timeout=1.0))  # before the fix: PoolTimeout, in_use=1 forever


def test_a_pool_not_opened_is_closed_and_refuses_at_once(dsn):
    pool = ConnectionPool(dsn, open=False, name="later")
    assert pool.closed
    t0 = time.monotonic()
    with pytest.raises(PoolClosed, match=re.escape("'later' is not open yet: call open()")):
        pool.getconn(timeout=3)
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(PoolClosed, match="not open yet"):
        pool.wait(1)
    pool.open(wait=True)
    assert not pool.closed
    pool.close()
    assert pool.closed


def test_wait_on_a_closed_pool_or_closed_while_waiting_raises_pool_closed(dsn):
    pool = ConnectionPool(dsn, min_size=1)
    pool.close()
    with pytest.raises(PoolClosed):
        pool.wait(1)
    unreachable = f"postgresql://app:x@127.0.0.1:{_closed_port()}/app"
    pool2 = ConnectionPool(unreachable, min_size=1, name="never")
    threading.Timer(0.3, pool2.close).start()
    t0 = time.monotonic()
    with pytest.raises(PoolClosed):
        pool2.wait(SETTLE)
    assert time.monotonic() - t0 < SETTLE / 2


def test_callable_conninfo_is_called_once_per_connection(make_pool, dsn):
    calls = []

    def conninfo() -> str:
        calls.append(1)
        return dsn

    pool = make_pool(conninfo=conninfo, min_size=3, max_size=3)
    assert pool.stats()["created"] == 3
    assert len(calls) == 3


def test_a_pool_dropped_without_close_closes_quietly(dsn, app_name):
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = ConnectionPool(dsn, min_size=2, name="dropped", kwargs={"application_name": app_name})
        pool.wait(SETTLE)
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        returned = conn  # a returned handle must not keep the pool alive
        ref = weakref.ref(pool)
        del pool
        gc.collect()
        assert ref() is None
        wait_until(lambda: not backends(dsn, app_name), what="the idle connections to close")
        wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("dropped-")],
                   what="the pool's threads to end")  # fmt: skip
        gc.collect()
    resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not resource, [str(w.message) for w in resource]
    with pytest.raises(PoolError):
        returned.execute("SELECT 1")


def test_tenant_quota_is_rebuilt_in_a_forked_child(make_pool):
    pool = make_pool(min_size=1, max_size=2, tenant_limits={"acme": 1})
    held = pool.getconn(tenant="acme")

    def child() -> int:
        with pool.connection(timeout=SETTLE, tenant="acme") as conn:
            return conn.execute("SELECT 1").fetchone()[0]

    assert in_child(child) == 1  # before the fix: PoolTimeout, the parent's borrow counted
    pool.putconn(held)


def test_returning_an_open_transaction_warns_rate_limited(make_pool, caplog):
    pool = make_pool(min_size=1, max_size=1, name="careless")
    with caplog.at_level(logging.WARNING, logger="threadpool_db"):
        for _ in range(5):
            conn = pool.getconn()
            conn.execute("SELECT 1")  # opens a transaction, never committed
            pool.putconn(conn)
        conn = pool.getconn()
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        pool.putconn(conn)  # in a failed transaction
    msgs = [r.getMessage() for r in caplog.records if "was returned" in r.getMessage()]
    assert len([m for m in msgs if "inside an open transaction" in m]) == 1, msgs
    assert len([m for m in msgs if "in a failed transaction" in m]) == 1, msgs
    assert all("'careless'" in m for m in msgs)
    with pool.connection() as conn:  # rolled back all the same
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_with_block_rollback_on_exception_does_not_warn(make_pool, caplog):
    pool = make_pool(min_size=1, max_size=1)
    with caplog.at_level(logging.WARNING, logger="threadpool_db"), pytest.raises(ZeroDivisionError):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
            raise ZeroDivisionError
    assert not [r for r in caplog.records if "was returned" in r.getMessage()]


# -- psycopg_pool's API on ours ------------------------------------------------------------
def test_empty_conninfo_uses_libpq_environment(pg, monkeypatch, app_name):
    u = urlsplit(pg.url)
    for k, v in {"PGHOST": u.hostname, "PGPORT": str(u.port), "PGUSER": u.username,
                 "PGPASSWORD": u.password, "PGDATABASE": u.path.lstrip("/")}.items():  # fmt: skip
        monkeypatch.setenv(k, v or "")
    with ConnectionPool("", min_size=1, kwargs={"application_name": app_name}) as pool:
        with pool.connection(timeout=SETTLE) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (u.username,)


def test_kwargs_may_be_a_callable_called_per_connection(make_pool, dsn, app_name):
    u = urlsplit(dsn)
    calls = []

    def kwargs():
        calls.append(1)
        return {"password": u.password, "application_name": app_name}

    conninfo = f"host={u.hostname} port={u.port} user={u.username} dbname={u.path.lstrip('/')}"
    pool = ConnectionPool(conninfo, kwargs=kwargs, min_size=2)
    try:
        pool.wait(SETTLE)
        assert len(calls) == 2 and len(backends(dsn, app_name)) == 2
    finally:
        pool.close()


def test_reconnect_failed_is_called_on_time_and_each_attempt_is_logged(caplog):
    """With reconnect_timeout=1.0, reconnect_failed comes within 10% of 1 s (psycopg_pool's
    precision: the last attempt is made at the deadline, not after the next backoff step), and
    each failed attempt logs a WARNING with its cause before the final ERROR."""
    called: list[float] = []
    caplog.set_level(logging.DEBUG, logger="threadpool_db")
    t0 = time.monotonic()
    pool = ConnectionPool(f"host=127.0.0.1 port={_closed_port()} dbname=x user=x", min_size=1,
                          reconnect_timeout=1.0, reconnect_failed=lambda p: called.append(time.monotonic()),
                          name="gives-up")  # fmt: skip
    try:
        wait_until(lambda: called, what="reconnect_failed")
        assert 0.9 <= called[0] - t0 <= 1.1 + 0.1, f"reconnect_failed after {called[0] - t0:.2f} s"  # +0.1: start-up
        warnings_ = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                     and "'gives-up': cannot connect" in r.getMessage()]  # fmt: skip
        assert len(warnings_) >= 3, warnings_  # attempts at about 0, 0.1, 0.3, 0.7 s, then the last at 1.0 s
        assert all("connection refused" in w.lower() for w in warnings_), warnings_
        errors = [r.getMessage() for r in caplog.records
                  if r.levelno == logging.ERROR and "giving up" in r.getMessage()]  # fmt: skip
        assert len(errors) == 1
    finally:
        pool.close()


def test_connection_class_is_used(make_pool):
    class DictConnection(psycopg.Connection):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.row_factory = dict_row

    pool = make_pool(connection_class=DictConnection, min_size=1)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    with pytest.raises(ValueError, match="connection_class"):
        ConnectionPool("", connection_class=dict, open=False)


def test_check_validates_idle_connections_now(make_pool, dsn, app_name):
    pool = make_pool(min_size=3, max_size=3, check="never")
    before = set(backends(dsn, app_name))
    killed = sorted(before)[:2]
    for pid in killed:
        sql(dsn, "SELECT pg_terminate_backend(%s)", (pid,))
    pool.check()
    wait_until(lambda: pool.stats()["size"] == 3 and pool.stats()["idle"] == 3, what="the pool to refill")
    after = set(backends(dsn, app_name))
    assert not (after & set(killed)) and len(after) == 3
    assert pool.stats()["check_failed"] == 2
    with pool.connection() as conn:  # check="never": only check() could have caught them
        conn.execute("SELECT 1")


def test_drain_replaces_every_connection(make_pool, dsn, app_name):
    pool = make_pool(min_size=2, max_size=3)
    held = pool.getconn()
    before = set(backends(dsn, app_name))
    pool.drain()
    pool.putconn(held)  # out during the drain: closed on return
    wait_until(lambda: len(set(backends(dsn, app_name))) == 2 and not (set(backends(dsn, app_name)) & before),
               what="all new backends")  # fmt: skip


def test_resize_has_psycopg_pool_meaning(make_pool):
    pool = make_pool(min_size=1, max_size=4)
    pool.resize(2)  # max_size None: max_size = min_size
    assert (pool.min_size, pool.max_size) == (2, 2)
    pool.resize(1, 3)
    assert (pool.min_size, pool.max_size) == (1, 3)
    with pytest.raises(ValueError, match="max_size"):
        pool.resize(3, 2)


def test_get_stats_and_pop_stats_use_psycopg_pool_keys(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    for _ in range(3):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    held = pool.getconn()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=SHORT_TIMEOUT)
    pool.putconn(held)
    s = pool.get_stats()
    assert s["pool_min"] == 1 and s["pool_max"] == 1 and s["pool_size"] == 1 and s["pool_available"] == 1
    assert s["requests_num"] == 5 and s["requests_errors"] == 1 and s["requests_queued"] == 1
    assert s["connections_num"] >= 1 and "usage_ms" in s
    popped = pool.pop_stats()
    assert popped["requests_num"] == 5
    after = pool.get_stats()
    assert "requests_num" not in after and after["pool_size"] == 1  # counters from zero, sizes stay
    assert pool.stats()["borrows"] == 4  # our own totals are untouched


@pytest.mark.parametrize("check", ["never", "always"])  # the granter / the waiter finishes the borrow
def test_get_stats_totals_count_every_wait_and_hold(make_pool, check):
    """requests_wait_ms and usage_ms add up the waits and holds of many threads at once, whoever
    finishes a waited borrow (the granter; or the waiter, when validation is due): none is lost."""
    pool = make_pool(min_size=2, max_size=2, check=check)
    hold = 0.01

    def borrow(i: int) -> None:
        for _ in range(10):
            with pool.connection(timeout=JOIN):
                time.sleep(hold)

    assert run_threads(6, borrow) == []
    s = pool.get_stats()
    assert s["requests_num"] == 60 and s["requests_queued"] >= 1
    assert s["usage_ms"] >= 60 * hold * 1000  # every hold counted
    # 6 threads on 2 connections: 60 holds of 10 ms go through 2 at a time, so the waits
    # add up to at least (6 - 2) threads waiting most of the run
    assert s["requests_wait_ms"] >= 0.5 * (6 - 2) * (60 * hold / 2) * 1000


def test_check_connection_is_usable_as_check(make_pool):
    pool = make_pool(min_size=1, max_size=1, check=ConnectionPool.check_connection)
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert not conn.autocommit


def test_pool_errors_are_psycopg_operational_errors(make_pool):
    pool = make_pool(min_size=1, max_size=1, max_waiting=1)
    held = pool.getconn()
    try:
        with pytest.raises(psycopg.OperationalError):
            pool.getconn(timeout=SHORT_TIMEOUT)
        assert TooManyRequests is TooManyWaiters
    finally:
        pool.putconn(held)
    pool.close()
    with pytest.raises(psycopg.OperationalError):
        pool.getconn()


def test_null_pool_connects_per_borrow_caps_and_queues_fairly(dsn, app_name):
    with NullConnectionPool(dsn, max_size=2, kwargs={"application_name": app_name}, name="null") as pool:
        assert pool.stats()["size"] == 0 and pool.min_size == 0
        pids = []
        for _ in range(3):
            with pool.connection(timeout=SETTLE) as conn:
                pids.append(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        assert len(set(pids)) == 3  # a new connection each time, closed on return
        wait_until(lambda: not backends(dsn, app_name), what="returned connections to close")
        peak = []
        order = []
        lock = threading.Lock()

        def work(i: int) -> None:
            with pool.connection(timeout=JOIN) as conn:
                with lock:
                    order.append(i)
                    peak.append(pool.stats()["size"])
                conn.execute("SELECT pg_sleep(0.05)")

        errors = run_threads(6, work)
        assert not errors and max(peak) <= 2
    with pytest.raises(ValueError, match="min_size must be 0"):
        NullConnectionPool(dsn, min_size=1, open=False)


def _closed_port() -> int:
    from threadpool_db.testing import free_port

    return free_port()


def test_generic_subscription_like_psycopg_pool_works(make_pool):
    from psycopg.rows import DictRow

    alias = ConnectionPool[psycopg.Connection[DictRow]]
    assert alias is ConnectionPool
    assert NullConnectionPool[psycopg.Connection[DictRow]] is NullConnectionPool


# -- the handle is a psycopg.Connection for psycopg's own type checks -------------------------
Row = TypeVar("Row", covariant=True)


class _MyConnection(psycopg.Connection[Row]):
    """A generic connection_class, as psycopg's typing docs write one."""


@pytest.mark.parametrize("cls", ["default", "subclass", "generic alias"])
def test_the_handle_passes_isinstance_for_psycopg_and_the_connection_class(make_pool, cls):
    connection_class = {"default": None, "subclass": _MyConnection, "generic alias": _MyConnection[DictRow]}[cls]
    pool = make_pool(min_size=1, max_size=1, connection_class=connection_class)
    conn = pool.getconn()
    assert isinstance(conn, psycopg.Connection) and isinstance(conn, PooledConnection)
    assert isinstance(conn, _MyConnection) == (cls != "default")
    assert type(conn) is PooledConnection  # still the handle: it dies on return
    pool.putconn(conn)
    assert not isinstance(conn, psycopg.Connection)  # a returned handle is a connection no more
    with pytest.raises(PoolError, match="already returned"):
        conn.execute("SELECT 1")


def test_enum_registration_through_the_handle(make_pool, app_name):
    import enum

    from psycopg.types.enum import EnumInfo, register_enum

    name = f"mood_{app_name.replace('-', '_')}"
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.execute(f"CREATE TYPE {name} AS ENUM ('sad', 'ok', 'happy')")
    Mood = enum.Enum("Mood", ["sad", "ok", "happy"])
    with pool.connection() as conn:
        info = EnumInfo.fetch(conn, name)  # TypeError before: "expected Connection, got PooledConnection"
        assert info is not None and info.labels == ["sad", "ok", "happy"]
        register_enum(info, conn, Mood)
        assert conn.execute(f"SELECT 'happy'::{name}").fetchone() == (Mood.happy,)
        assert conn.execute(f"SELECT %s::{name}", [Mood.sad]).fetchone() == (Mood.sad,)
        conn.execute(f"DROP TYPE {name}")


def test_composite_registration_through_the_handle(make_pool, app_name):
    from psycopg.types.composite import CompositeInfo, register_composite

    name = f"card_{app_name.replace('-', '_')}"
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.execute(f"CREATE TYPE {name} AS (value int, suit text)")
    with pool.connection() as conn:
        info = CompositeInfo.fetch(conn, name)
        assert info is not None and list(info.field_names) == ["value", "suit"]
        register_composite(info, conn)
        (card,) = conn.execute(f"SELECT (8, 'hearts')::{name}").fetchone()
        assert (card.value, card.suit) == (8, "hearts") and type(card).__name__ == name
        conn.execute(f"DROP TYPE {name}")


def test_hstore_registration_through_the_handle(make_pool, app_name):
    """TypeInfo.fetch and register_hstore on the handle. The embedded server has no contrib
    modules: where the hstore extension is missing, a domain named hstore stands in, which is
    enough for the type check, the catalog lookup and the dumper (the server reports a domain's
    values as its base type, so only the real extension round-trips a dict)."""
    from psycopg.types import TypeInfo
    from psycopg.types.hstore import register_hstore

    schema = f"s_{app_name.replace('-', '_')}"
    pool = make_pool(min_size=1, max_size=1, kwargs={"options": f"-c search_path={schema},public"})
    with pool.connection() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            with conn.transaction():
                conn.execute(f"CREATE EXTENSION hstore SCHEMA {schema}")
            real = True
        except psycopg.errors.FeatureNotSupported:  # not installed on this server
            conn.execute(f"CREATE DOMAIN {schema}.hstore AS text")
            real = False
    try:
        with pool.connection() as conn:
            info = TypeInfo.fetch(conn, "hstore")  # what SQLAlchemy's psycopg dialect does on connect
            assert info is not None and info.name == "hstore"
            register_hstore(info, conn)
            got = conn.execute("SELECT %t::hstore", [{"a": "1", "b": None}]).fetchone()[0]  # text format
            assert got == ({"a": "1", "b": None} if real else '"a"=>"1","b"=>NULL')  # psycopg's dumper wrote it
    finally:
        sql(pool.conninfo, f"DROP SCHEMA {schema} CASCADE")  # type: ignore[arg-type]


def test_sqlalchemy_psycopg_dialect_connects_through_the_handle(make_pool):
    """psycopg's recipe (creator=pool.getconn): SQLAlchemy's dialect fetches the hstore type
    on first connect, which type-checks the connection."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    pool = make_pool(min_size=1, max_size=2)
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=pool.getconn, poolclass=NullPool)
    with engine.connect() as c:
        assert c.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    engine.dispose()
    wait_until(lambda: pool.stats()["in_use"] == 0, what="the connection to come back")


# -- close() as psycopg_pool users write it ------------------------------------------------------
def test_close_then_putconn_is_accepted_once_and_closed_reads_true(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    assert conn.closed is False
    conn.close()  # gives it back
    assert conn.closed is True  # reading it does not raise
    pool.putconn(conn)  # psycopg_pool's documented pattern: accepted quietly
    assert pool.stats()["idle"] == 1 and pool.stats()["borrows"] == 1
    with pytest.raises(PoolError, match="already returned"):
        pool.putconn(conn)  # a second return is still a double return
    other = pool.getconn()
    pool.putconn(other)
    with pytest.raises(PoolError, match="already returned"):
        pool.putconn(other)  # never closed: no forgiveness


def test_a_connection_class_whose_close_gives_it_back_works(make_pool, dsn, app_name):
    """psycopg's "close returns" recipe: a connection_class whose close() returns the connection
    to the pool it came from, and closes it for real when it is not out."""

    class ReturningConnection(psycopg.Connection):
        def close(self) -> None:
            pool = getattr(self, "_pool", None)
            if pool is not None:
                pool.putconn(self)
            else:
                super().close()

    pool = make_pool(min_size=1, max_size=1, connection_class=ReturningConnection, close_returns=True)
    for _ in range(3):
        conn = pool.getconn()
        pid = conn.info.backend_pid
        conn.close()  # back to the pool, not closed
        assert pool.stats()["idle"] == 1
    assert backends(dsn, app_name) == [pid]  # the same backend served all three
    pool.close()  # the pool closes it for real (the class's close, with no pool attached)
    wait_until(lambda: not backends(dsn, app_name), what="the backend to go")


# -- sizes, the null pool, stats, reconnecting, reopening -----------------------------------------
def test_min_size_zero_needs_a_max_size_as_in_psycopg_pool(dsn):
    with pytest.raises(ValueError, match="max_size must be given when min_size is 0"):
        ConnectionPool(dsn, min_size=0, max_size=None, open=False)
    assert ConnectionPool(dsn, min_size=3, open=False).max_size == 3  # None means min_size
    null = NullConnectionPool(dsn, open=False)
    assert null.min_size == 0 and null.max_size == 0  # 0: no cap, as psycopg_pool reads it
    assert null.get_stats()["pool_max"] == 0
    assert NullConnectionPool(dsn, max_size=3, open=False).max_size == 3


def test_null_pool_wait_makes_one_connection_or_raises(dsn, app_name):
    configured = []
    with NullConnectionPool(dsn, max_size=2, kwargs={"application_name": app_name},
                            configure=lambda c: configured.append(1)) as pool:  # fmt: skip
        pool.wait(SETTLE)
        assert configured == [1]  # one connection was made, and configured
        wait_until(lambda: not backends(dsn, app_name), what="the probe connection to close")
    down = NullConnectionPool(f"host=127.0.0.1 port={_closed_port()} dbname=x user=x", name="null-down")
    with times_out(1.0, match="'null-down'"):
        down.wait(1.0)
    assert down.closed

    def bad_configure(conn):
        raise RuntimeError("configure says no")

    broken = NullConnectionPool(dsn, configure=bad_configure, name="null-badconf")
    with times_out(1.0, match="configure says no"):
        broken.wait(1.0)
    assert broken.closed


def test_null_pool_reset_runs_once_per_return(dsn):
    resets: list[int] = []
    with NullConnectionPool(dsn, max_size=1, reset=lambda c: resets.append(1)) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        assert len(resets) == 0  # closed (nobody waits): no reset, as psycopg_pool
        held = pool.getconn()
        waiter = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=JOIN)), daemon=True)
        waiter.start()
        wait_until(lambda: pool.stats()["waiting"] == 1, what="a waiter")
        pool.putconn(held)  # handed to the waiter: reset once
        waiter.join(JOIN)
        assert not waiter.is_alive()
        assert len(resets) == 1  # the handed-over one only: the waiter's own return closes it


def test_get_stats_has_psycopg_pools_connection_counters(make_pool, dsn, app_name):
    pool = make_pool(min_size=2, max_size=2, check="always")
    s = pool.get_stats()
    assert s["connections_num"] == 2
    assert s["connections_ms"] >= 1  # each connect (TCP, a backend, scram) takes more than a millisecond
    assert "connections_errors" not in s and "connections_lost" not in s  # zero: left out, as psycopg_pool
    pids = pool.backend_pids()
    sql(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
    wait_until(lambda: not set(pids) & set(backends(dsn, app_name)), what="the backends to go")
    with pool.connection(timeout=SETTLE) as conn:  # both fail their check, a new one serves
        conn.execute("SELECT 1")
    s = pool.get_stats()
    assert s["connections_lost"] >= 1 and s["connections_num"] >= 3
    bad = ConnectionPool(f"host=127.0.0.1 port={_closed_port()} dbname=x user=x", min_size=1, name="errs")
    try:
        wait_until(lambda: bad.get_stats().get("connections_errors", 0) >= 1, what="a failed connect")
        assert bad.get_stats()["connections_num"] >= 1
    finally:
        bad.close()


def test_reopening_a_closed_pool_says_it_is_already_closed(dsn):
    pool = ConnectionPool(dsn, min_size=1, name="reopen")
    pool.close()
    with pytest.raises(PoolClosed, match="pool 'reopen' is already closed"):  # psycopg_pool's words
        pool.open()
