"""Faults against servers the tests own: killed backends, network faults through a proxy,
a database down at startup, bad passwords, and a full server."""

from __future__ import annotations

import itertools
import threading
import time
from urllib.parse import urlsplit

import psycopg
import pytest

from threadpool_db import ConnectionPool, PoolConfigError, PoolTimeout
from threadpool_db.config import AUTO_CHECK_IDLE

from ..helpers import connect, run_threads, sql, wait_until
from ..timing import JOIN, SETTLE


def _pids(pg, app: str) -> set[int]:
    return {r[0] for r in sql(pg.admin_url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))}


def test_killed_backends_idle_and_in_use_are_discarded_and_replaced(own_pg):
    pg = own_pg()
    pool = ConnectionPool(pg.url(), min_size=4, max_size=4, kwargs={"application_name": "kill"}, name="kill")
    try:
        pool.wait(SETTLE)
        out = [pool.getconn(), pool.getconn()]
        killed = _pids(pg, "kill")
        assert len(killed) == 4
        sql(pg.admin_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kill'")
        wait_until(lambda: not _pids(pg, "kill"), what="backends gone")
        for c in out:  # in use: the user's next query fails, the return discards it
            with pytest.raises(psycopg.OperationalError):
                c.execute("SELECT 1")
            pool.putconn(c)
        wait_until(lambda: pool.stats()["size"] == 4, what="the two in-use ones replaced")
        time.sleep(AUTO_CHECK_IDLE * 1.2)  # a duration is the condition: idle past check="auto"'s window
        # Borrow all four: the two killed while idle must be caught by validation (LIFO order
        # would otherwise hand out the fresh ones first); the user's query never sees them.
        conns = [pool.getconn(timeout=SETTLE) for _ in range(4)]
        seen = [c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns]
        for c in conns:
            pool.putconn(c)
        s = pool.stats()
        assert s["check_failed"] == 2 and s["discarded_broken"] >= 4
        assert not set(seen) & killed and len(set(seen)) == 4
        wait_until(lambda: pool.stats()["size"] == 4 and len(_pids(pg, "kill")) == 4, what="replaced")
        assert not _pids(pg, "kill") & killed
    finally:
        pool.close()


def test_blackhole_connects_and_borrows_fail_within_their_timeouts(own_pg, proxy):
    pg = own_pg()
    px = proxy(pg.port)
    px.mode = "blackhole"
    pool = ConnectionPool(px.url(pg.url()), min_size=1, timeout=1.0, connect_timeout=1.0, open=False)
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout, match="could not open"):
        pool.open(wait=True, timeout=1.5)
    assert time.monotonic() - t0 < 5.0
    pool2 = ConnectionPool(px.url(pg.url()), min_size=0, max_size=2, timeout=1.0, connect_timeout=1.0)
    try:
        took: list[float] = []

        def borrower(i: int) -> None:
            t = time.monotonic()
            with pytest.raises(PoolTimeout):
                pool2.getconn()
            took.append(time.monotonic() - t)

        assert run_threads(4, borrower, timeout=JOIN) == []  # asserts no thread hung
        assert max(took) < 1.0 + 2.0
        wait_until(lambda: pool2.stats()["create_errors"] >= 1, what="the blackholed connect to time out")
        assert "timeout expired" in (pool2.stats()["last_error"] or "")
    finally:
        pool2.close()


def test_blackhole_on_an_open_connection_is_bounded_by_validation(own_pg, proxy):
    pg = own_pg()
    px = proxy(pg.port)
    pool = ConnectionPool(px.url(pg.url()), min_size=1, max_size=1, timeout=3.0, check="always", check_timeout=0.5,
                          connect_timeout=1.0)  # fmt: skip
    try:
        pool.wait(SETTLE)
        px.mode = "blackhole"
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            pool.getconn()
        assert time.monotonic() - t0 < 3.0 + 2.0
        assert pool.stats()["check_failed"] >= 1
        px.mode = "pass"
        with pool.connection(timeout=SETTLE) as conn:
            conn.execute("SELECT 1")
    finally:
        pool.close()


def test_connection_dropped_mid_query_is_discarded_and_the_next_borrow_works(own_pg, proxy):
    pg = own_pg()
    px = proxy(pg.port)
    pool = ConnectionPool(px.url(pg.url()), min_size=1, max_size=1, timeout=SETTLE)
    try:
        pool.wait(SETTLE)
        errors: list[BaseException] = []

        def query() -> None:
            try:
                with pool.connection() as conn:
                    conn.execute("SELECT pg_sleep(5)")
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=query, daemon=True)
        t.start()
        wait_until(lambda: sql(pg.admin_url, "SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
                               "AND query = 'SELECT pg_sleep(5)'"), what="the query running on the server")  # fmt: skip
        px.drop_all()
        t.join(JOIN)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], psycopg.OperationalError)
        with pool.connection(timeout=SETTLE) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert pool.stats()["discarded_broken"] == 1
    finally:
        pool.close()


def test_slow_network_still_works(own_pg, proxy):
    pg = own_pg()
    px = proxy(pg.port)
    px.mode, px.delay = "delay", 0.02
    pool = ConnectionPool(px.url(pg.url()), min_size=2, max_size=2, timeout=SETTLE, check="always")
    try:
        pool.wait(SETTLE)

        def worker(i: int) -> None:
            for _ in range(3):
                with pool.connection() as conn:
                    assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)

        assert run_threads(4, worker) == []
        assert pool.stats()["discarded_broken"] == 0
    finally:
        pool.close()


def test_database_down_at_startup_fails_clearly_then_background_open_recovers(own_pg):
    pg = own_pg()
    pg.stop_server()
    url = pg.url()
    password = urlsplit(url).password
    pool = ConnectionPool(url, min_size=1, open=False)
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout) as ei:
        pool.open(wait=True, timeout=1.0)
    assert time.monotonic() - t0 < 4.0
    msg = str(ei.value)
    assert f"127.0.0.1:{pg.port}" in msg and "refused" in msg.lower()
    assert password not in msg
    bg = ConnectionPool(url, min_size=2, name="bg")  # background open: retries by itself
    try:
        wait_until(lambda: bg.stats()["create_errors"] >= 2, what="two failed attempts")
        assert bg.stats()["size"] == 0
        pg._start_server()
        wait_until(lambda: bg.stats()["size"] == 2, timeout=SETTLE, what="background open recovered")
        with bg.connection() as conn:
            conn.execute("SELECT 1")
    finally:
        bg.close()


def test_wrong_password_fails_fast_and_backs_off(own_pg):
    pg = own_pg()
    u = urlsplit(pg.url())
    url = f"postgresql://app:not-the-password@127.0.0.1:{u.port}/app"
    pool = ConnectionPool(url, min_size=1, open=False)
    t0 = time.monotonic()
    with pytest.raises(PoolConfigError, match="password authentication failed"):
        pool.open(wait=True, timeout=30.0)  # fails at once, not after its timeout
    assert time.monotonic() - t0 < 1.0
    bg = ConnectionPool(url, min_size=1, num_workers=1)
    try:
        wait_until(lambda: len(bg.connect_attempts()) >= 5, timeout=SETTLE, what="five attempts")
    finally:
        bg.close()
    ts = bg.connect_attempts()
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    assert gaps[3] > 2 * gaps[0]  # backoff: the server is not hammered
    assert len(ts) < 20


def test_server_full_counts_create_errors_and_borrowers_time_out_cleanly(own_pg):
    pg = own_pg(max_connections=6, superuser_reserved_connections=1)
    hogs = [connect(pg.url()) for _ in range(5)]  # 6 - 1 reserved = 5 for ordinary roles
    pool = ConnectionPool(pg.url(), min_size=0, max_size=2, timeout=1.0, num_workers=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as ei:
            pool.getconn()
        assert time.monotonic() - t0 < 1.0 + 1.0
        assert "too many clients" in str(ei.value) or "remaining connection slots" in str(ei.value)
        s = pool.stats()
        assert s["create_errors"] >= 1 and s["size"] == 0
        hogs.pop().close()  # a slot frees: the pool gets its connection
        with pool.connection(timeout=SETTLE) as conn:
            conn.execute("SELECT 1")
    finally:
        pool.close()
        for h in hogs:
            h.close()
