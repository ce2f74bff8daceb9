"""The connector (threadpool_db/connector.py) makes, checks, resets and closes one connection:
configure once per new connection, the check at borrow time (and a check that times out is
closed by its own thread), the reset on return (no work or setting leaks to the next
borrower), what is unfit for reuse is replaced, and the driver seam for other kinds of
connection. The backoff is in tests/test_backoff.py; configuration errors (fail fast) are in
tests/test_fail_fast.py; callbacks that misbehave are in tests/test_misuse.py."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from threadpool_db import ConnectionPool, PoolError
from threadpool_db.drivers import IDLE, UNKNOWN, DbapiDriver, Driver

from .fakes import Factory
from .helpers import sql, wait_until
from .timing import JOIN, SETTLE


def test_configure_runs_once_per_new_connection(make_pool):
    seen: list[int] = []

    def configure(conn: psycopg.Connection) -> None:
        seen.append(conn.info.backend_pid)
        conn.execute("SET application_name = 'configured'")
        conn.commit()

    pool = make_pool(min_size=2, max_size=2, configure=configure)
    for _ in range(5):
        with pool.connection() as conn:
            assert conn.execute("SHOW application_name").fetchone() == ("configured",)
    assert len(seen) == 2


def test_custom_check_and_reset_callbacks_are_called(make_pool):
    checked: list[int] = []
    resets: list[int] = []
    pool = make_pool(
        min_size=1, max_size=1,
        check=lambda c: checked.append(c.info.backend_pid),
        reset=lambda c: resets.append(c.info.backend_pid),
    )  # fmt: skip
    for _ in range(3):
        with pool.connection():
            pass
    assert len(checked) == 3 and len(resets) == 3


def test_validation_catches_a_killed_idle_connection(make_pool, pg):
    pool = make_pool(min_size=1, max_size=1, check="always")
    with pool.connection() as conn:
        pid = conn.info.backend_pid
    sql(pg.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: pid not in [r[0] for r in sql(pg.admin_url, "SELECT pid FROM pg_stat_activity")])
    with pool.connection(timeout=SETTLE) as conn:  # the user's query never sees the dead one
        assert conn.info.backend_pid != pid
        conn.execute("SELECT 1")
    assert pool.stats()["check_failed"] == 1


def test_killed_backend_is_discarded_and_replaced(make_pool, pg):
    pool = make_pool(min_size=1, max_size=1, check="never")
    with pool.connection() as conn:
        pid = conn.info.backend_pid
    sql(pg.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    with pool.connection(timeout=SETTLE) as conn:
        assert conn.info.backend_pid != pid
        conn.execute("SELECT 1")
    assert pool.stats()["discarded_broken"] >= 1


def test_uncommitted_work_and_settings_do_not_leak_to_the_next_borrower(make_pool, dsn):
    pool = make_pool(min_size=1, max_size=1)
    sql(dsn, "CREATE TABLE IF NOT EXISTS t_iso (v int)")
    sql(dsn, "TRUNCATE t_iso")
    c1 = pool.getconn()
    pid = c1.info.backend_pid
    c1.execute("INSERT INTO t_iso VALUES (42)")
    c1.execute("SET LOCAL statement_timeout = '1s'")
    pool.putconn(c1)  # no commit: the pool must roll back
    c2 = pool.getconn()
    assert c2.info.backend_pid == pid  # same connection, so the test means something
    assert c2.execute("SELECT count(*) FROM t_iso").fetchone() == (0,)
    c2.rollback()
    c2.autocommit = True
    c2.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    c2.read_only = True
    pool.putconn(c2)
    c3 = pool.getconn()
    assert c3.info.backend_pid == pid
    assert c3.autocommit is False
    assert c3.isolation_level is None
    assert c3.read_only is None
    # the same settings changed through psycopg's methods rather than the properties
    c3.set_autocommit(True)
    c3.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    c3.set_read_only(True)
    c3.set_deferrable(True)
    pool.putconn(c3)
    c4 = pool.getconn()
    assert c4.info.backend_pid == pid
    assert (c4.autocommit, c4.isolation_level, c4.read_only, c4.deferrable) == (False, None, None, None)
    assert c4.execute("SHOW transaction_read_only").fetchone() == ("off",)
    c4.rollback()
    pool.putconn(c4)


def test_a_failed_transaction_is_rolled_back_on_return(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1/0")
    pool.putconn(conn)  # INERROR now
    with pool.connection() as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)


class _RecordingConnection(psycopg.Connection):
    closed_by: list[str] = []

    def close(self) -> None:
        _RecordingConnection.closed_by.append(threading.current_thread().name)
        super().close()


def test_a_timed_out_check_is_closed_by_its_own_thread_not_from_beside_it(make_pool, dsn):
    release = threading.Event()

    def slow_check(conn) -> None:
        release.wait(JOIN)  # stands for a check stuck inside the driver

    _RecordingConnection.closed_by.clear()
    pool = make_pool(min_size=0, max_size=1, connection_class=_RecordingConnection, check=slow_check,
                     check_timeout=0.2, wait=False)  # fmt: skip
    with pytest.raises(PoolError):
        pool.getconn(timeout=1.0)  # the check times out (and the backoff keeps retries few)
    assert _RecordingConnection.closed_by == []  # nobody closed it while its check was running
    release.set()
    wait_until(lambda: _RecordingConnection.closed_by, what="the check thread to close it")
    assert all(name.endswith("-check") for name in _RecordingConnection.closed_by), _RecordingConnection.closed_by


def test_generic_driver_rolls_back_every_return_and_commits_on_clean_with():
    factory = Factory()
    pool = ConnectionPool(connect=factory, min_size=1, max_size=1, check="never")
    try:
        pool.wait(SETTLE)
        c = pool.getconn()
        pool.putconn(c)
        raw = factory.made[0]
        assert raw.rollbacks == 1
        with pool.connection():
            pass
        assert raw.commits == 1
    finally:
        pool.close()


def test_a_closed_fake_connection_is_discarded_and_replaced():
    factory = Factory()
    pool = ConnectionPool(connect=factory, min_size=1, max_size=1, check="never")
    try:
        pool.wait(SETTLE)
        c = pool.getconn()
        c.raw.close()
        pool.putconn(c)
        wait_until(lambda: len(factory.made) == 2 and pool.stats()["idle"] == 1, what="replacement")
        assert pool.stats()["discarded_broken"] == 1
    finally:
        pool.close()


def test_reset_callback_that_raises_discards_and_carries_on():
    factory = Factory()
    calls = []

    def reset(conn):
        calls.append(conn.id)
        if len(calls) == 1:
            raise RuntimeError("reset exploded")

    pool = ConnectionPool(connect=factory, min_size=1, max_size=1, check="never", reset=reset)
    try:
        pool.wait(SETTLE)
        pool.putconn(pool.getconn())
        with pool.connection(timeout=SETTLE):
            pass
        s = pool.stats()
        assert s["reset_failed"] == 1 and len(factory.made) == 2
    finally:
        pool.close()


class _Token:
    """A second kind of connection: not a DB-API connection at all."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False
        self.broken = False


class _TokenDriver:
    """Makes, checks, resets and closes tokens: the connector's seam (drivers.Driver, a
    Protocol: no base class), as FairQueuePool uses it for SQLAlchemy's connection records. It
    records every call the pool makes of it."""

    name = "tokens"
    knows_status = True

    def __init__(self) -> None:
        self.made: list[_Token] = []
        self.calls: list[str] = []

    def connect(self) -> _Token:
        self.made.append(_Token(len(self.made)))
        return self.made[-1]

    def settings(self, raw: Any) -> tuple[Any, ...]:
        return ()

    def restore(self, raw: Any, settings: tuple[Any, ...]) -> None:
        pass

    def abort(self, raw: Any) -> None:
        self.close(raw)

    def backend_pid(self, raw: Any) -> int | None:
        return None

    def status(self, raw: Any) -> int:
        return UNKNOWN if raw.closed else IDLE

    def rollback(self, raw: Any) -> None:
        self.calls.append("rollback")

    def validate(self, raw: Any, timeout: float) -> None:
        self.calls.append("validate")
        if raw.broken:
            raise RuntimeError("token broken")

    def close(self, raw: Any) -> None:
        self.calls.append("close")
        raw.closed = True


def test_a_second_kind_of_connection_plugs_in_through_the_driver_seam():
    driver = _TokenDriver()
    assert isinstance(driver, Driver) and not issubclass(_TokenDriver, DbapiDriver)  # by its members alone
    pool = ConnectionPool(driver=driver, min_size=2, max_size=2, check="always", leak_threshold=None, name="tokens")
    try:
        pool.wait(10)
        with pool.connection() as conn:
            assert isinstance(conn.raw, _Token)  # the pool holds what the driver makes
        assert "rollback" not in driver.calls  # a clean token is not "rolled back"
        driver.made[0].broken = driver.made[1].broken = True
        with pool.connection(timeout=10) as conn:  # a broken one fails its check: another serves
            assert not conn.raw.broken and conn.raw in driver.made[2:]
        assert pool.stats()["check_failed"] >= 1 and "validate" in driver.calls
    finally:
        pool.close()
    assert all(t.closed for t in driver.made)  # closed through the driver, every one
    with pytest.raises(ValueError, match="driver, or conninfo or connect"):
        ConnectionPool("dbname=x", driver=_TokenDriver(), open=False)


def test_a_driver_without_the_seams_members_is_refused():
    no_abort = type("NoAbort", (), {k: v for k, v in vars(_TokenDriver).items() if k != "abort"})
    assert not isinstance(no_abort(), Driver)
    with pytest.raises(ValueError, match=r"driver must be a threadpool_db\.drivers\.Driver, got NoAbort"):
        ConnectionPool(driver=no_abort(), open=False)
    with pytest.raises(ValueError, match="got object"):
        ConnectionPool(driver=object(), open=False)  # type: ignore[arg-type]
