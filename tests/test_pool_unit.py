"""Pool logic over a fake driver: handoff races, counting, growth. No database involved."""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

import pytest

from threadpool_db import ConnectionPool, PoolError, PoolTimeout
from threadpool_db.drivers import IDLE, UNKNOWN, Driver
from threadpool_db.housekeeper import BUSY_TICK, QUIET_TICK, Housekeeper, View
from threadpool_db.records import Slot

from .fakes import Factory, FakeConnection
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


class _TokenDriver(Driver):
    """Makes, checks, resets and closes tokens: the connector's seam, as FairQueuePool will use
    it for SQLAlchemy's connection records. It records every call the pool makes of it."""

    name = "tokens"
    knows_status = True

    def __init__(self) -> None:
        super().__init__(self._make)
        self.made: list[_Token] = []
        self.calls: list[str] = []

    def _make(self) -> _Token:
        self.made.append(_Token(len(self.made)))
        return self.made[-1]

    def settings(self, raw: Any) -> tuple[Any, ...]:
        return ()

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


# -- the housekeeper sleeps until its next deadline (issue 32 item 9) --------------------------
def _view(now: float, quiet: bool, **kw: Any) -> View:
    fields: dict[str, Any] = dict(now=now, idle=[], size=2, keep=2, borrows=0, borrows_at_window_start=0,
                                  waiting_since=[], next_expiry=math.inf, quiet=quiet)  # fmt: skip
    fields.update(kw)
    return View(**fields)


class _Pool:
    """A Sweepable that shows one View and records what it is asked (pure housekeeping logic)."""

    name = "unit"

    def __init__(self, view: View) -> None:
        self._view = view
        self.evicted: list[Any] = []

    def view(self) -> View:
        return self._view

    def evict(self, victims: list[Any]) -> None:
        self.evicted.extend(victims)

    def set_ceiling(self, cap: int) -> None:
        pass


def test_a_quiet_pools_housekeeper_sleeps_until_the_next_lifetime_end_or_idle_limit():
    hk = Housekeeper(max_idle=20.0, max_size=4, burst_size=None, burst_wait_threshold=0.1)
    assert hk.tick(_Pool(_view(100.0, True, next_expiry=130.0))) == pytest.approx(30.0)
    # above min_size: an idle connection that rested since 95 retires at 115
    rested = Slot(FakeConnection(), None, 0.0, 1e9, (), 1)
    rested.last_used = 95.0
    assert hk.tick(_Pool(_view(100.0, True, idle=[rested], size=3, next_expiry=130.0))) == pytest.approx(15.0)
    # above min_size, none idle: one that comes to rest from now on retires max_idle later at the soonest
    assert hk.tick(_Pool(_view(100.0, True, size=3, next_expiry=500.0))) == pytest.approx(20.0)
    # nothing due: at most a minute (one advisor window)
    assert hk.tick(_Pool(_view(100.0, True))) == QUIET_TICK
    # borrowers coming: the one-second rhythm (the advisor's samples, burst decisions)
    assert hk.tick(_Pool(_view(100.0, False, next_expiry=130.0))) == BUSY_TICK


def test_a_new_connection_wakes_a_sleeping_housekeeper_to_retire_it_on_time():
    """The housekeeper found nothing to do and went to sleep for long; a connection that then
    arrives (a slow connect) with a short lifetime is still retired on time."""
    made: list[FakeConnection] = []

    def slow_connect() -> FakeConnection:
        time.sleep(1.6)  # past the housekeeper's first two rounds: it saw nothing, and slept
        c = FakeConnection()
        made.append(c)
        return c

    pool = ConnectionPool(connect=slow_connect, min_size=1, max_size=1, check="never", max_lifetime=2.0)
    try:
        wait_until(lambda: made, what="the slow connect")
        first = made[0]
        wait_until(lambda: first.closed, what="the first connection's lifetime to end and it to close")
    finally:
        pool.close()
