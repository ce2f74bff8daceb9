"""The reconnect backoff, in one place (threadpool_db/connector.py owns it): failed connects are
retried at an exponential pace, one backoff per pool shared by its creator threads; a check
that always fails on brand-new connections pushes it too, so it cannot storm the server (a
``check()`` sweep does not: its failures tell the server's state);
reconnect_timeout gives up on time and each attempt is logged; errors back off, then recover.

One more backoff test needs a server of its own and stays with the fault tests:
tests/faults/test_faults.py::test_wrong_password_fails_fast_and_backs_off."""

from __future__ import annotations

import itertools
import logging
import threading
import time

import psycopg

from threadpool_db import ConnectionPool
from threadpool_db.embedded import free_port as _closed_port  # as tests/test_dropin.py names it

from .fakes import Factory
from .helpers import times_out, wait_until
from .timing import SETTLE


def test_background_open_retries_with_backoff():
    from threadpool_db.embedded import free_port

    pool = ConnectionPool(f"postgresql://app:pw@127.0.0.1:{free_port()}/app", min_size=1, num_workers=1)
    try:
        wait_until(lambda: len(pool.connect_attempts()) >= 5, what="5 attempts")
    finally:
        pool.close()
    ts = pool.connect_attempts()
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    assert gaps[3] > gaps[0]  # exponential: 0.1, 0.2, 0.4, 0.8 s (±25%)
    assert pool.stats()["create_errors"] >= 5


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


def test_a_check_sweep_of_brand_new_connections_does_not_hold_back_their_replacements(dsn):
    """``pool.check()`` tests every idle connection at once: its failures tell the server's
    state, so they do not push the backoff; the replacements' own connects pace the retries
    (psycopg_pool's check() starts them at once). Six brand-new connections failing a check at
    borrow time would hold every connect after the first back 0.75 s or more (BACKOFF_MAX,
    -25%); here the server is gone, so the second attempt follows the first's backoff, 0.1 s."""
    gone = threading.Event()

    def connect() -> psycopg.Connection:
        if gone.is_set():
            raise psycopg.OperationalError("the server is gone (test)")
        return psycopg.connect(dsn)

    def check(conn: object) -> None:
        if gone.is_set():
            raise psycopg.OperationalError("the server is gone (test)")

    pool = ConnectionPool(connect=connect, check=check, min_size=6, max_size=6, num_workers=1, open=True,
                          name="sweep")  # fmt: skip
    try:
        pool.wait(timeout=SETTLE)
        gone.set()
        pool.check()
        swept = time.monotonic()
        wait_until(lambda: len([t for t in pool.connect_attempts() if t > swept]) >= 2, what="2 reconnects")
        second = sorted(t for t in pool.connect_attempts() if t > swept)[1]
        assert second - swept < 0.5, f"the second reconnect began {second - swept:.2f} s after the sweep"
        assert pool.stats()["check_failed"] == 6
    finally:
        pool.close()


def test_reconnect_failed_is_called_on_time_and_each_attempt_is_logged(caplog):
    """With reconnect_timeout=1.0, reconnect_failed comes within 10% of 1 s (psycopg_pool's
    precision: the last attempt is made at the deadline, not after the next backoff step), and
    each failed attempt is logged with its cause before the final ERROR: the first at WARNING,
    the repeats of the same cause within 10 s at DEBUG (an outage is not a line per attempt)."""
    called: list[float] = []
    caplog.set_level(logging.DEBUG, logger="threadpool_db")
    t0 = time.monotonic()
    pool = ConnectionPool(f"host=127.0.0.1 port={_closed_port()} dbname=x user=x", min_size=1,
                          reconnect_timeout=1.0, reconnect_failed=lambda p: called.append(time.monotonic()),
                          name="gives-up")  # fmt: skip
    try:
        wait_until(lambda: called, what="reconnect_failed")
        assert 0.9 <= called[0] - t0 <= 1.1 + 0.1, f"reconnect_failed after {called[0] - t0:.2f} s"  # +0.1: start-up
        lines = [r for r in caplog.records if "'gives-up': cannot connect" in r.getMessage()]
        assert len(lines) >= 3, lines  # attempts at about 0, 0.1, 0.3, 0.7 s, then the last at 1.0 s
        assert [r.levelno for r in lines] == [logging.WARNING] + [logging.DEBUG] * (len(lines) - 1)
        assert all("connection refused" in r.getMessage().lower() for r in lines), lines
        errors = [r.getMessage() for r in caplog.records
                  if r.levelno == logging.ERROR and "giving up" in r.getMessage()]  # fmt: skip
        assert len(errors) == 1
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
