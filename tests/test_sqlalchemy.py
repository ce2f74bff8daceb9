"""FairQueuePool (threadpool_db.sqlalchemy) on a real PostgreSQL: SQLAlchemy's pool contract
(events, pre-ping, recycle, invalidation, reset on return, dispose/recreate, QueuePool's
arithmetic, the timeout error) and what it adds (FIFO fairness where QueuePool starves, leak
reports naming the application's line)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from threadpool_db.sqlalchemy import FairQueuePool

from .helpers import backends, line_of, run_threads, sql, wait_until
from .timing import JOIN


def _url(pg: Any) -> str:
    return pg.url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def engines(pg: Any, app_name: str) -> Iterator[Any]:
    made: list[sa.Engine] = []

    def make(**kw: Any) -> sa.Engine:
        kw.setdefault("poolclass", FairQueuePool)
        kw.setdefault("connect_args", {"application_name": app_name})
        eng = sa.create_engine(_url(pg), **kw)
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.dispose()
        eng.pool.core.close()  # the pool dispose() put in place: no thread of ours outlives the test


def _events(eng: sa.Engine) -> Counter[str]:
    seen: Counter[str] = Counter()
    for name in ("connect", "first_connect", "checkout", "checkin", "reset", "invalidate", "soft_invalidate",
                 "close", "detach", "close_detached"):  # fmt: skip
        sa.event.listen(eng.pool, name, lambda *a, _n=name, **k: seen.update([_n]))
    return seen


def test_create_engine_passes_queuepool_and_our_own_options(engines):
    eng = engines(pool_size=3, max_overflow=2, pool_timeout=4.5, pool_use_lifo=True, leak_threshold=12.0,
                  capture_stacks="full", max_waiting=7, name="sa-options")  # fmt: skip
    pool = eng.pool
    assert isinstance(pool, FairQueuePool)
    assert (pool.size(), pool.timeout(), pool._max_overflow, pool._use_lifo) == (3, 4.5, 2, True)
    core = pool.core
    assert core.name == "sa-options" and core.max_size == 5 and core.timeout == 4.5 and core.max_waiting == 7
    assert core.leak_threshold == 12.0


def test_every_pool_event_fires_as_sqlalchemy_fires_them(engines, pg, app_name):
    eng = engines(pool_size=2, max_overflow=1)
    seen = _events(eng)
    with eng.connect() as c:
        c.execute(sa.text("SELECT 1"))
    with eng.connect() as c:  # the same connection again: connect fired once
        c.execute(sa.text("SELECT 1"))
    assert seen["connect"] == 1 and seen["first_connect"] == 1
    assert seen["checkout"] == 2 and seen["checkin"] == 2 and seen["reset"] == 2
    with eng.connect() as c:
        c.connection.invalidate(soft=True)
    assert seen["soft_invalidate"] == 1
    with eng.connect() as c:  # soft-invalidated: reconnected at this checkout
        c.connection.invalidate()
    assert seen["invalidate"] == 1 and seen["close"] >= 1
    c = eng.connect()
    c.connection.detach()
    assert seen["detach"] == 1
    c.close()  # a detached connection closes for real
    assert seen["close_detached"] == 1
    held = [eng.connect() for _ in range(3)]  # two pooled, one overflow
    for h in held:
        h.close()
    assert seen["close"] >= 2  # the overflow one, closed on return (QueuePool's rule)
    assert eng.pool.checkedin() == 2


def test_pre_ping_replaces_a_connection_the_server_killed(engines, pg):
    eng = engines(pool_size=1, max_overflow=0, pool_pre_ping=True)
    with eng.connect() as c:
        pid = c.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    sql(pg.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: not sql(pg.admin_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)),
               what="the backend to go")  # fmt: skip
    with eng.connect() as c:  # pre-ping finds it dead and reconnects: the user sees no error
        assert c.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid


def test_recycle_replaces_old_connections(engines):
    eng = engines(pool_size=1, max_overflow=0, pool_recycle=1)
    with eng.connect() as c:
        first = c.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    time.sleep(1.2)
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT pg_backend_pid()")).scalar() != first


def test_a_disconnect_invalidates_the_pool_engine_wide(engines, pg):
    eng = engines(pool_size=2, max_overflow=0)

    # Which error text psycopg gives for a killed backend depends on timing ("terminating
    # connection..." or "connection socket closed"), and SQLAlchemy's dialect recognizes only
    # some: its documented hook says it is a disconnect, so the test does not depend on it.
    @sa.event.listens_for(eng, "handle_error")
    def _disconnect(ctx: Any) -> None:
        if isinstance(ctx.original_exception, Exception) and "SELECT 1" in (ctx.statement or ""):
            ctx.is_disconnect = True

    a, b = eng.connect(), eng.connect()
    pids = [x.execute(sa.text("SELECT pg_backend_pid()")).scalar() for x in (a, b)]
    a.commit()
    b.commit()
    b.close()
    sql(pg.admin_url, "SELECT pg_terminate_backend(%s)", (pids[0],))
    with pytest.raises(sa.exc.DBAPIError) as ei:
        a.execute(sa.text("SELECT 1"))
    assert ei.value.connection_invalidated
    a.close()
    with eng.connect() as c:  # the disconnect invalidated every connection older than it
        assert c.execute(sa.text("SELECT pg_backend_pid()")).scalar() not in pids


@pytest.mark.parametrize("reset", ["rollback", "commit", None])
def test_reset_on_return_is_sqlalchemys(engines, pg, app_name, reset):
    table = f"t_{app_name.replace('-', '_')}"
    sql(pg.url, f"CREATE TABLE {table} (x int)")
    eng = engines(pool_size=1, max_overflow=0, pool_reset_on_return=reset)
    try:
        raw = eng.raw_connection()  # the pool's own level (an engine Connection rolls back itself)
        raw.cursor().execute(f"INSERT INTO {table} VALUES (1)")
        raw.close()  # returned with the transaction open: the pool's reset decides
        rows = sql(pg.url, f"SELECT count(*) FROM {table}")[0][0]
        if reset == "commit":
            assert rows == 1
        elif reset == "rollback":
            assert rows == 0
        else:  # no reset: the transaction is still open on the pooled connection
            assert rows == 0
            with eng.connect() as c2:
                assert c2.connection.dbapi_connection.info.transaction_status != 0  # INTRANS
                c2.connection.dbapi_connection.rollback()
    finally:
        eng.dispose()
        sql(pg.url, f"DROP TABLE {table}")


def test_dispose_and_recreate_keep_the_class_options_and_listeners(engines):
    eng = engines(pool_size=2, max_overflow=1, leak_threshold=15.0, name="sa-recreate")
    seen = _events(eng)
    with eng.connect():
        pass
    assert eng.pool.checkedin() == 1
    old = eng.pool
    eng.dispose()
    assert old.checkedin() == 0 and seen["close"] == 1
    new = eng.pool
    assert new is not old and isinstance(new, FairQueuePool)
    assert new.core.stats()["threads"] >= 1
    assert (new.size(), new._max_overflow, new.core.leak_threshold, new.core.name) == (2, 1, 15.0, "sa-recreate")
    with eng.connect():
        pass
    assert seen["checkout"] == 2  # the listeners came along


def test_default_core_names_stay_unique_as_pools_come_and_go():
    """A FairQueuePool given no name gets one its logs, leak reports and metrics can tell apart
    from every other in the process, a recreated pool's predecessor included: not one made of
    an id(), which Python reuses once the object is gone."""
    names = []
    for _ in range(20):
        pool = FairQueuePool(lambda: None, pool_size=1)
        names.append(pool.core.name)
        pool.core.close()
        del pool
        gc.collect()
    assert len(set(names)) == len(names), names


def test_a_recreated_pool_stays_usable_and_closes_what_comes_back(engines, pg, app_name):
    """As QueuePool: SQLAlchemy may still check out of a pool it recreated. A connection that was
    out across engine.dispose() closes as it comes back; a new checkout of the old pool works;
    once nothing holds the old pool its threads end (no wait for the cyclic collector)."""
    eng = engines(pool_size=2, max_overflow=0, name="sa-old")
    out = eng.connect()
    out_pid = out.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    old = eng.pool
    eng.dispose()
    out.close()  # back to the old pool: closed, not kept
    wait_until(lambda: out_pid not in backends(pg.admin_url, app_name), what="the old connection closed")
    assert old.checkedin() == 0
    again = old.connect()  # the old pool still lends
    assert again.cursor().execute("SELECT 1") is not None
    again.close()
    assert old.checkedin() == 1  # ...and keeps what it lent after the recreate
    core = weakref.ref(old.core)
    old.dispose()
    del old, again
    assert core() is None  # freed at once: its __del__ stopped its threads
    mine = eng.pool.core.stats()["threads"]  # the new core has the same name: count them out
    wait_until(lambda: len([t for t in threading.enumerate() if t.name.startswith("sa-old-")]) == mine,
               what="the old core's threads to end")  # fmt: skip


def test_dispose_closes_the_idle_and_keeps_what_is_out(engines, pg, app_name):
    """QueuePool's dispose(): the idle connections close; one out comes back and is lent again."""
    eng = engines(pool_size=2, max_overflow=0)
    pool = eng.pool
    first, second = pool.connect(), pool.connect()
    idle_pid = first.dbapi_connection.info.backend_pid
    out_pid = second.dbapi_connection.info.backend_pid
    first.close()
    pool.dispose()
    wait_until(lambda: idle_pid not in backends(pg.admin_url, app_name), what="the idle one closed")
    second.close()
    third = pool.connect()
    assert third.dbapi_connection.info.backend_pid == out_pid
    third.close()


@pytest.mark.parametrize("max_overflow", [-1, -5])
def test_a_negative_max_overflow_means_no_limit_and_timeout_none_waits(engines, max_overflow):
    """QueuePool's rules: any negative max_overflow is unlimited; pool_timeout=None waits as long
    as it takes (here until a connection comes back)."""
    eng = engines(pool_size=1, max_overflow=max_overflow, pool_timeout=None)
    pool = eng.pool
    held = [pool.connect() for _ in range(4)]  # four, from a pool_size of one
    assert pool.checkedout() == 4 and pool.timeout() is None
    for h in held:
        h.close()
    capped = engines(pool_size=1, max_overflow=0, pool_timeout=None).pool
    one = capped.connect()
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(capped.connect()), daemon=True)
    waiter.start()
    time.sleep(0.3)
    assert not got  # still waiting: no timeout
    one.close()
    waiter.join(JOIN)
    assert not waiter.is_alive() and len(got) == 1
    got[0].close()


def test_is_asyncio_is_false_whatever_the_dialect(pg):
    """A sync pool, as QueuePool: an asyncio engine refuses it instead of running it."""
    from sqlalchemy.pool.base import _AsyncConnDialect

    pool = FairQueuePool(lambda: None, pool_size=1)
    try:
        pool._dialect = _AsyncConnDialect()
        assert pool._is_asyncio is False
        with pytest.raises(sa.exc.ArgumentError, match="cannot be used with asyncio engine"):
            from sqlalchemy.ext.asyncio import create_async_engine

            create_async_engine(_url(pg), poolclass=FairQueuePool)
    finally:
        pool.core.close()


def test_dispose_without_close_in_a_forked_child(engines):
    """SQLAlchemy's recipe for os.fork(): the child disposes with close=False and connects
    anew; the parent's connection (out across the fork) is untouched by the child."""
    from .helpers import in_child

    eng = engines(pool_size=2, max_overflow=0)
    held = eng.connect()
    parent_pid = held.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    def child() -> int:
        eng.dispose(close=False)  # the parent's connections are left to the parent
        with eng.connect() as c:
            return int(c.execute(sa.text("SELECT pg_backend_pid()")).scalar())

    assert in_child(child) != parent_pid
    assert held.execute(sa.text("SELECT pg_backend_pid()")).scalar() == parent_pid  # still works
    held.close()


def test_queuepools_arithmetic(engines):
    eng = engines(pool_size=2, max_overflow=2)
    pool = eng.pool
    assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (0, 0, -2)
    held = [eng.connect() for _ in range(3)]
    for h in held:
        h.execute(sa.text("SELECT 1"))
    assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (0, 3, 1)
    assert "Current Checked out connections: 3" in pool.status()
    for h in held:
        h.close()
    assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (2, 0, 0)


def test_the_timeout_is_sqlalchemys_error_and_names_the_holders(engines):
    eng = engines(pool_size=1, max_overflow=0, pool_timeout=0.3, name="sa-timeout")
    held = eng.connect()  # HOLDER
    t0 = time.monotonic()
    with pytest.raises(sa.exc.TimeoutError) as ei:
        eng.connect()
    assert 0.25 < time.monotonic() - t0 < 3.0
    msg = str(ei.value)
    assert ei.value.code == "3o7r" and "FairQueuePool limit of size 1 overflow 0 reached" in msg
    me = test_the_timeout_is_sqlalchemys_error_and_names_the_holders
    assert f"{__file__}:{line_of(me, '# HOLDER')}" in msg  # the holder's line, not SQLAlchemy's
    held.close()


def test_leak_reports_name_the_applications_line(engines, recorder):
    eng = engines(pool_size=1, max_overflow=0, leak_threshold=30.0, capture_stacks="off")
    me = test_leak_reports_name_the_applications_line
    conn = eng.connect()  # ENGINE-CONNECT
    (rec,) = eng.pool.core.borrowed()
    assert rec["borrow_site"] == f"{__file__}:{line_of(me, '# ENGINE-CONNECT')}"
    conn.close()
    from sqlalchemy.orm import Session

    with Session(eng) as session:
        session.execute(sa.text("SELECT 1"))  # SESSION-EXECUTE
        (rec,) = eng.pool.core.borrowed()
        assert rec["borrow_site"] == f"{__file__}:{line_of(me, '# SESSION-EXECUTE')}"


def test_fifo_keeps_every_thread_served_where_queuepool_starves(pg):
    """16 threads on a pool of 4, each holding for 1 ms, both pools measured in this test."""

    def spread(poolclass: type) -> tuple[int, int]:
        eng = sa.create_engine(_url(pg), poolclass=poolclass, pool_size=4, max_overflow=0, pool_timeout=30)
        counts = [0] * 16
        stop = time.monotonic() + 2.5

        def work(i: int) -> None:
            while time.monotonic() < stop:
                with eng.connect():
                    time.sleep(0.001)
                counts[i] += 1

        try:
            assert run_threads(16, work, timeout=JOIN) == []
        finally:
            eng.dispose()
        return min(counts), max(counts)

    fair = spread(FairQueuePool)
    queue = spread(QueuePool)
    assert fair[0] >= 0.8 * fair[1], f"FairQueuePool per-thread checkouts {fair}"
    assert queue[0] < 0.8 * queue[1] or queue[0] < fair[0], f"QueuePool {queue} vs FairQueuePool {fair}"


def test_stats_are_the_cores(engines):
    eng = engines(pool_size=2, max_overflow=0, name="sa-stats")
    with eng.connect():
        s = eng.pool.core.stats()
        assert s["name"] == "sa-stats" and s["in_use"] == 1 and s["borrows"] == 1


def test_threads_share_no_connection(engines):
    eng = engines(pool_size=3, max_overflow=0)
    owners: dict[int, int] = {}
    lock = threading.Lock()
    clash: list[str] = []

    def work(i: int) -> None:
        for _ in range(30):
            with eng.connect() as c:
                pid = c.execute(sa.text("SELECT pg_backend_pid()")).scalar()
                with lock:
                    if pid in owners:
                        clash.append(f"{pid} by {i} and {owners[pid]}")
                    owners[pid] = i
                with lock:
                    owners.pop(pid, None)

    assert run_threads(8, work) == []
    assert clash == []


def test_the_url_plugin_switches_by_the_url_alone_and_strips_its_keys(pg):
    url = _url(pg) + "?plugin=threadpool_db&leak_threshold=5&name=via-url&pool_size=2&max_overflow=0"
    eng = sa.create_engine(url)
    try:
        assert isinstance(eng.pool, FairQueuePool)
        assert eng.pool.core.leak_threshold == 5.0 and eng.pool.core.name == "via-url" and eng.pool.size() == 2
        with eng.connect() as c:  # libpq never saw leak_threshold or name: it would refuse them
            assert c.execute(sa.text("SELECT 1")).scalar() == 1
        assert "leak_threshold" not in str(eng.url) and "plugin" not in str(eng.url)
    finally:
        eng.dispose()


@pytest.mark.parametrize("how", ["engine options", "url plugin"])
def test_a_flask_sqlalchemy_app_gets_the_fair_pool(pg, how):
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    app = Flask(f"fsa-{how.replace(' ', '-')}")
    if how == "engine options":
        app.config["SQLALCHEMY_DATABASE_URI"] = _url(pg)
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"poolclass": FairQueuePool, "pool_size": 2, "max_overflow": 0,
                                                   "leak_threshold": 30.0, "name": "fsa"}  # fmt: skip
    else:
        app.config["SQLALCHEMY_DATABASE_URI"] = _url(pg) + "?plugin=threadpool_db&name=fsa&leak_threshold=30"
    db = SQLAlchemy(app)
    me = test_a_flask_sqlalchemy_app_gets_the_fair_pool

    @app.get("/n")
    def n() -> dict[str, Any]:
        value = db.session.execute(sa.text("SELECT 41 + 1")).scalar()  # VIEW-LINE
        (rec,) = db.engine.pool.core.borrowed()
        return {"n": value, "site": rec["borrow_site"]}

    try:
        with app.app_context():
            assert isinstance(db.engine.pool, FairQueuePool) and db.engine.pool.core.name == "fsa"
        body = app.test_client().get("/n").get_json()
        assert body == {"n": 42, "site": f"{__file__}:{line_of(me, '# VIEW-LINE')}"}
        with app.app_context():
            assert db.engine.pool.checkedout() == 0  # Flask-SQLAlchemy's teardown gave it back
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("dialect", ["psycopg", "psycopg2"])
def test_both_postgresql_dialects(pg, dialect, recorder):
    eng = sa.create_engine(pg.url.replace("postgresql://", f"postgresql+{dialect}://", 1), poolclass=FairQueuePool,
                           pool_size=1, max_overflow=0, pool_pre_ping=True, leak_threshold=30.0)  # fmt: skip
    me = test_both_postgresql_dialects
    try:
        with eng.connect() as c:  # DIALECT-LINE
            assert c.execute(sa.text("SELECT 1")).scalar() == 1
            (rec,) = eng.pool.core.borrowed()
            assert rec["borrow_site"] == f"{__file__}:{line_of(me, '# DIALECT-LINE')}"
        assert eng.pool.checkedin() == 1
    finally:
        eng.dispose()


@pytest.mark.parametrize("lifo", [False, True])
def test_use_lifo_picks_the_warmest_and_fifo_the_longest_idle(engines, lifo):
    eng = engines(pool_size=2, max_overflow=0, pool_use_lifo=lifo)
    a, b = eng.connect(), eng.connect()
    pid_a = a.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    pid_b = b.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    a.close()  # idle longest
    b.close()  # idle last (the warmest)
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT pg_backend_pid()")).scalar() == (pid_b if lifo else pid_a)


def test_leak_detection_tells_a_thread_that_ended_and_an_escape(engines, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="threadpool_db.leaks")
    eng = engines(pool_size=2, max_overflow=0, leak_threshold=0.3, capture_stacks="full")
    kept: list[Any] = []

    def job() -> None:
        kept.append(eng.connect())  # ENDED-THREAD: borrowed, never closed, and the thread ends

    t = threading.Thread(target=job, name="sa-job")
    t.start()
    t.join(JOIN)
    assert not t.is_alive()
    wait_until(lambda: eng.pool.core.stats()["leaks_reclaimed"] == 1, what="the dead borrower's reclaim")
    (rec,) = [r for r in eng.pool.core.leak_reports() if r["thread_name"] == "sa-job"]
    assert rec["state"] == "thread ended"
    assert rec["borrow_site"] == f"{__file__}:{line_of(job, '# ENDED-THREAD')}"

    def escaping_view() -> None:
        kept.append(eng.connect())  # ESCAPE: the connection outlives the function

    escaping_view()
    wait_until(lambda: any(r["state"] == "escaped" for r in eng.pool.core.leaks()), what="the escape's report")
    assert any("escaped" in r.getMessage() for r in caplog.records)


def test_closing_a_connection_whose_core_handle_was_reclaimed(engines, recwarn):
    """Closed by the application, not left to garbage collection: it fails as SQLAlchemy fails
    a connection whose server went away mid-transaction (a disconnect error, the record
    invalidated), the record goes back and is closed, nothing is raised from a finalizer, and
    the pool lends its one connection again."""
    eng = engines(pool_size=1, max_overflow=0, leak_threshold=0.3, reclaim_leaked=True)
    seen = _events(eng)
    conn = eng.connect()
    conn.execute(sa.text("SELECT 1"))  # a transaction is open (autobegin)
    dbapi = conn.connection.dbapi_connection
    wait_until(lambda: eng.pool.core.stats()["leaks_reclaimed"] == 1, what="the reclaim")
    assert eng.pool.core.stats()["in_use"] == 0  # the core has it back already
    with pytest.raises(sa.exc.OperationalError) as ei:
        conn.close()
    assert ei.value.connection_invalidated  # SQLAlchemy's disconnect, as for a killed backend
    assert dbapi.closed
    # SQLAlchemy 2.1 marks the Connection closed when its close() raised; 2.0 leaves the flag
    # (the flag is SQLAlchemy's own; the pool side, dbapi.closed and the events, is the same)
    assert conn.closed or sa.__version__.startswith("2.0.")
    assert seen["invalidate"] == 1 and seen["close"] == 1 and seen["checkin"] == 1
    assert eng.pool.checkedout() == 0
    with eng.connect() as again:  # pool_size 1: lent again, on a new connection
        assert again.execute(sa.text("SELECT 2")).scalar() == 2
        assert again.connection.dbapi_connection is not dbapi
    gc.collect()
    assert [str(w.message) for w in recwarn if "Unraisable" in type(w.message).__name__] == []


def test_max_waiting_refuses_at_once_through_sqlalchemy(engines):
    eng = engines(pool_size=1, max_overflow=0, pool_timeout=10, max_waiting=1)
    held = eng.connect()
    waiter = threading.Thread(target=lambda: eng.connect().close(), daemon=True)
    waiter.start()
    wait_until(lambda: eng.pool.core.stats()["waiting"] == 1, what="one waiter")
    t0 = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="max_waiting=1"):  # SQLAlchemy wraps our error
        eng.connect()
    assert time.monotonic() - t0 < 2.0
    held.close()
    waiter.join(JOIN)
    assert not waiter.is_alive()


def test_prometheus_metrics_of_a_fair_queue_pool(engines):
    from prometheus_client import CollectorRegistry, generate_latest

    from threadpool_db.metrics import PoolMetrics

    eng = engines(pool_size=2, max_overflow=0, name="sa-prom")
    registry = CollectorRegistry()
    metrics = PoolMetrics(eng.pool.core, registry=registry, interval=3600.0)
    try:
        for _ in range(3):
            with eng.connect() as c:
                c.execute(sa.text("SELECT 1"))
        metrics.update()
        text = generate_latest(registry).decode()
        assert 'threadpool_db_connections_acquire_seconds_count{pool="sa-prom"} 3.0' in text
        assert 'threadpool_db_connections_max{pool="sa-prom"} 2.0' in text
    finally:
        metrics.close()
