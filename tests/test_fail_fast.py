"""Fail fast on configuration errors (wrong password, no such database, bad conninfo, unknown
host), keep waiting on transient ones (server down), and recover without a restart."""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

import psycopg
import pytest
from flask import Flask

from threadpool_db import ConnectionPool, PoolConfigError, PoolError
from threadpool_db.config import AUTO_CHECK_IDLE
from threadpool_db.drivers import permanent_cause
from threadpool_db.flask import FlaskPool

from .helpers import run_threads, wait_until
from .timing import JOIN, SETTLE


def _bad(dsn: str, what: str) -> str:
    u = urlsplit(dsn)
    return {
        "password": f"postgresql://app:Not-The-Passw0rd@{u.hostname}:{u.port}/app",
        "database": f"postgresql://{u.username}:{u.password}@{u.hostname}:{u.port}/no_such_db",
        "conninfo": f"host={u.hostname} port={u.port} dbname",
        "host": f"postgresql://{u.username}:{u.password}@no-such-host.invalid:{u.port}/app",
    }[what]


@pytest.mark.parametrize(
    ("what", "cause", "text"),
    [
        ("password", "authentication failed", "password authentication failed"),
        ("database", "no such database", 'database "no_such_db" does not exist'),
        ("conninfo", "bad conninfo", 'missing "=" after "dbname"'),
        ("host", "unknown host", "no-such-host.invalid"),
    ],
)
def test_a_configuration_error_fails_a_borrow_at_once(pg, what, cause, text, caplog):
    u = urlsplit(pg.url)
    pool = ConnectionPool(_bad(pg.url, what), min_size=1, timeout=30.0, name=f"bad-{what}")
    try:
        with caplog.at_level(logging.DEBUG, logger="threadpool_db"):
            wait_until(lambda: pool.stats()["config_error"], what="the first failed connect")
            t0 = time.monotonic()
            with pytest.raises(PoolConfigError) as ei:
                pool.getconn()  # the pool's timeout is 30 s
            assert time.monotonic() - t0 < 1.0
        assert isinstance(ei.value, PoolError) and isinstance(ei.value, psycopg.OperationalError)
        assert cause in str(ei.value) and text in str(ei.value) and f"'bad-{what}'" in str(ei.value)
        assert u.password not in str(ei.value)
        # the driver's exception is chained (its class kept), and the text stays an attribute
        driver_error = ei.value.__cause__
        assert isinstance(driver_error, psycopg.Error), repr(driver_error)
        assert text in str(driver_error) and isinstance(ei.value.cause, str) and text in ei.value.cause
        assert "Not-The-Passw0rd" not in str(driver_error) + repr(driver_error.args)
        s = pool.stats()
        assert s["config_error"].startswith(cause) and s["config_errors"] >= 1

        def error_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if r.levelno == logging.ERROR and "cannot connect" in r.getMessage()]  # fmt: skip

        # The creator logs after it records the failure (which the borrow above already saw):
        # wait for the line, and for two more failed attempts, then it must still be one line.
        wait_until(error_lines, what="the ERROR line")
        wait_until(lambda: pool.stats()["create_errors"] >= 3, what="two more attempts")
        assert len(error_lines()) == 1, error_lines()  # once per distinct cause
    finally:
        pool.close()


def test_open_wait_fails_at_once_on_a_configuration_error(pg):
    pool = ConnectionPool(_bad(pg.url, "password"), min_size=2, open=False)
    t0 = time.monotonic()
    with pytest.raises(PoolConfigError, match="password authentication failed"):
        pool.open(wait=True, timeout=30.0)
    assert time.monotonic() - t0 < 1.0


def test_waiters_already_queued_are_failed_the_same_way(pg):
    gate = threading.Event()
    bad = _bad(pg.url, "password")

    def conninfo() -> str:
        gate.wait(JOIN)  # hold the first connects until borrowers queue
        return bad

    pool = ConnectionPool(conninfo, min_size=1, max_size=2, timeout=30.0)
    results: list[BaseException | None] = [None] * 4
    started = threading.Barrier(5)

    def borrow(i: int) -> None:
        started.wait(JOIN)
        t0 = time.monotonic()
        try:
            pool.getconn()
        except PoolError as e:
            results[i] = e
        assert time.monotonic() - t0 < SETTLE

    try:
        threads = threading.Thread(target=lambda: run_threads(4, borrow))
        threads.start()
        started.wait(JOIN)
        wait_until(lambda: pool.stats()["waiting"] == 4, what="four queued borrowers")
        gate.set()
        threads.join(JOIN)
        assert not threads.is_alive()
        assert all(isinstance(e, PoolConfigError) for e in results), results
    finally:
        gate.set()
        pool.close()


def test_a_password_fixed_on_the_server_recovers_without_a_restart(own_pg, caplog):
    pg = own_pg()
    u = urlsplit(pg.url())
    pg.sql("CREATE ROLE rotating LOGIN PASSWORD 'first-Passw0rd'")
    pg.sql("GRANT CONNECT ON DATABASE app TO rotating")
    current = {"pw": "first-Passw0rd"}

    def conninfo() -> str:  # rotating credentials, read for each new connection
        return f"postgresql://rotating:{current['pw']}@{u.hostname}:{u.port}/app"

    pg.sql("ALTER ROLE rotating PASSWORD 'second-Passw0rd'")  # rotated on the server first
    with caplog.at_level(logging.INFO, logger="threadpool_db"):
        pool = ConnectionPool(conninfo, min_size=1, name="rotating")
        try:
            wait_until(lambda: pool.stats()["config_error"], what="the permanent failure")
            with pytest.raises(PoolConfigError):
                pool.getconn()
            current["pw"] = "second-Passw0rd"  # the secret store catches up
            wait_until(lambda: pool.stats()["size"] == 1, timeout=2 * SETTLE, what="recovery")
            with pool.connection(timeout=SETTLE) as conn:
                assert conn.execute("SELECT current_user").fetchone() == ("rotating",)
            assert pool.stats()["config_error"] is None
            # and a later run of permanent failures sets the state again
            pg.sql("ALTER ROLE rotating PASSWORD 'third-Passw0rd'")
            pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'rotating'")
            wait_until(lambda: not pg.sql("SELECT 1 FROM pg_stat_activity WHERE usename = 'rotating'"),
                       what="the backend to exit")  # fmt: skip
            time.sleep(AUTO_CHECK_IDLE * 1.2)  # idle past check="auto": the borrow validates, discards, reconnects
            t0 = time.monotonic()
            with pytest.raises(PoolConfigError):
                pool.getconn(timeout=JOIN)
            assert time.monotonic() - t0 < SETTLE
            assert pool.stats()["config_error"].startswith("authentication failed")
        finally:
            pool.close()
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(lv == logging.ERROR and "authentication failed" in m for lv, m in msgs)
    assert any(lv == logging.WARNING and "again after" in m for lv, m in msgs)  # it says when it clears
    for secret in ("first-Passw0rd", "second-Passw0rd", "third-Passw0rd"):
        assert all(secret not in m for _, m in msgs)


def test_a_stopped_server_is_transient_borrowers_wait_and_recover(own_pg):
    pg = own_pg()
    pool = ConnectionPool(pg.url(), min_size=1, max_size=1, check="always")
    try:
        pool.wait(SETTLE)
        pg.stop_server()
        restart = threading.Timer(1.0, pg.restart)
        restart.start()
        t0 = time.monotonic()
        with pool.connection(timeout=JOIN) as conn:  # waits: no PoolConfigError
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - t0 > 0.5
        restart.join(JOIN)
        assert pool.stats()["config_error"] is None
    finally:
        pool.close()


def test_transient_errors_are_not_permanent():
    for text in ('connection to server at "127.0.0.1", port 5 failed: Connection refused',
                 "FATAL:  sorry, too many clients already",
                 "FATAL:  the database system is starting up",
                 "FATAL:  the database system is shutting down",
                 "connection timeout expired"):  # fmt: skip
        assert permanent_cause(psycopg.OperationalError(text)) is None, text


def test_flask_503_for_a_configuration_error_says_what_is_wrong(pg):
    app = Flask("failfast")
    app.config["THREADPOOL_DB_CONNINFO"] = _bad(pg.url, "password")
    db = FlaskPool(app, max_size=2, timeout=30)

    @app.get("/q")
    def q() -> str:
        return str(db.connection().execute("SELECT 1").fetchone())

    try:
        wait_until(lambda: db.pool_for(app).stats()["config_error"], what="the first failure")
        t0 = time.monotonic()
        resp = app.test_client().get("/q")
        assert time.monotonic() - t0 < 1.0
        assert resp.status_code == 503
        body = resp.get_json()
        assert body["error"] == "database unavailable" and "cause" not in body
        assert "Not-The-Passw0rd" not in resp.get_data(as_text=True)
    finally:
        db.close(app)
