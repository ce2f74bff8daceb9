"""Pool logic over a fake driver: handoff races, counting, growth. No database involved."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from threadpool_db import ConnectionPool, PoolError, PoolTimeout
from threadpool_db.drivers import IDLE, UNKNOWN, DbapiDriver, Driver

from .fakes import Factory
from .helpers import run_threads, wait_until
from .timing import SETTLE


def test_timeouts_racing_returns_never_lose_a_connection():
    factory = Factory()
    pool = ConnectionPool(connect=factory, min_size=3, max_size=3, check="never")
    try:
        pool.wait(SETTLE)
        got = timeouts = 0
        lock = threading.Lock()

        def worker(i: int) -> None:
            nonlocal got, timeouts
            rnd = random.Random(i)
            for _ in range(300):
                try:
                    conn = pool.getconn(timeout=rnd.choice([0.0, 0.0001, 0.001]))
                except PoolTimeout:
                    with lock:
                        timeouts += 1
                    continue
                with lock:
                    got += 1
                pool.putconn(conn)

        assert run_threads(16, worker) == []
        s = pool.stats()
        assert s["size"] == 3 and s["idle"] == 3 and s["in_use"] == 0 and s["waiting"] == 0
        assert s["borrows"] == got and s["timeouts"] == timeouts
        assert got + timeouts == 16 * 300
        assert len(factory.made) == 3  # nothing was lost, so nothing needed replacing
    finally:
        pool.close()


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


def test_create_errors_back_off_then_recover():
    factory = Factory()
    factory.fail_next = 3
    pool = ConnectionPool(connect=factory, min_size=1, max_size=1, num_workers=1)
    try:
        pool.wait(SETTLE)
        s = pool.stats()
        assert s["create_errors"] == 3 and s["size"] == 1 and s["last_error"] is None
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


def test_double_putconn_from_two_threads_returns_once():
    factory = Factory()
    pool = ConnectionPool(connect=factory, min_size=2, max_size=2, check="never")
    try:
        pool.wait(SETTLE)
        for _ in range(200):
            c = pool.getconn()
            barrier = threading.Barrier(2)
            errs = []

            def put(i: int, c=c, barrier=barrier, errs=errs) -> None:
                barrier.wait(SETTLE)
                try:
                    pool.putconn(c)
                except PoolError as e:
                    errs.append(e)

            assert run_threads(2, put) == []
            assert len(errs) == 1
            s = pool.stats()
            assert s["idle"] == 2 and s["in_use"] == 0
    finally:
        pool.close()


def test_nothing_is_handed_out_after_close():
    pool = ConnectionPool(connect=Factory(), min_size=1, check="never")
    pool.wait(SETTLE)
    pool.close()
    with pytest.raises(PoolError):
        pool.getconn()


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
