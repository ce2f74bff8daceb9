"""The housekeeper (threadpool_db/housekeeper.py): idle connections past max_lifetime retire and
are replaced up to min_size, a borrowed one only when it comes back; max_idle shrinks the pool
to min_size and never closes a connection under its borrower. Bursts: tests/test_bursts.py."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest

from threadpool_db import ConnectionPool
from threadpool_db.housekeeper import BUSY_TICK, QUIET_TICK, Housekeeper, View
from threadpool_db.records import Slot

from .fakes import FakeConnection
from .helpers import run_threads, wait_until
from .timing import JOIN, SETTLE


def test_max_lifetime_recycles_idle_connections_only(make_pool):
    pool = make_pool(min_size=2, max_size=2, max_lifetime=0.5)
    filled = time.monotonic()  # both connections exist: both expire by filled + max_lifetime
    held = pool.getconn()
    pid = held.info.backend_pid
    # The idle twin expiring proves the housekeeper ran past its lifetime; once the held one's
    # has passed too, it must still be untouched while in use.
    wait_until(lambda: pool.stats()["expired"] >= 1 and time.monotonic() > filled + 0.5,
               what="the idle connection to expire and both lifetimes to pass")  # fmt: skip
    assert held.execute("SELECT pg_backend_pid()").fetchone() == (pid,)
    pool.putconn(held)  # expired: closed on return, and replaced
    with pool.connection(timeout=SETTLE) as conn:
        assert conn.info.backend_pid != pid
    assert pool.stats()["expired"] >= 2


def test_housekeeper_retires_expired_idle_connections(make_pool):
    pool = make_pool(min_size=2, max_size=2, max_lifetime=0.5)
    first = pool.stats()["created"]
    wait_until(lambda: pool.stats()["expired"] >= 2, what="two expired")
    wait_until(lambda: pool.stats()["size"] == 2, what="refill to min_size")
    assert pool.stats()["created"] >= first + 2


def test_max_idle_shrinks_to_min_size(make_pool):
    pool = make_pool(min_size=1, max_size=4, max_idle=0.3)
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        with pool.connection(timeout=JOIN):
            barrier.wait(JOIN)

    assert run_threads(4, worker) == []
    assert pool.stats()["size"] == 4
    wait_until(lambda: pool.stats()["size"] == 1, what="shrink to min_size")
    assert pool.stats()["idle_closed"] == 3


def test_max_idle_closes_the_idle_connections_not_the_one_in_use(make_pool):
    """Which ones go: those idle past max_idle, never the one a borrower keeps using."""
    pool = make_pool(min_size=3, max_size=3, max_idle=0.3)
    time.sleep(0.5)  # all three idle past max_idle; min_size keeps them for now
    used: set[int] = set()
    with pool.connection(timeout=JOIN) as conn:
        used.add(conn.info.backend_pid)
    pool.resize(1, 3)  # now two of them may go
    # Keep using one (the idle deque is LIFO: the same one comes back while it survives).
    deadline = time.monotonic() + SETTLE
    while pool.stats()["size"] > 1 and time.monotonic() < deadline:
        with pool.connection(timeout=JOIN) as conn:
            used.add(conn.info.backend_pid)
        time.sleep(0.05)
    assert pool.stats()["size"] == 1, "the pool did not shrink to min_size"
    assert len(used) == 1, f"the connection in use was closed under its borrower: it went through backends {used}"
    assert pool.backend_pids() == sorted(used)
    assert pool.stats()["idle_closed"] == 2


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

    def _begin_round(self) -> View:
        return self._view

    def _evict(self, victims: list[Any]) -> None:
        self.evicted.extend(victims)

    def _set_ceiling(self, cap: int) -> None:
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
