"""Leak detection against a real server: reports, holder stacks, reclaim, dead borrowers."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

import psycopg
import pytest

from threadpool_db import ConnectionPool, ConnectionReclaimed
from threadpool_db.leaks import LeakDetector

from .helpers import backends, line_of, times_out, wait_until
from .timing import JOIN, SETTLE, SHORT_TIMEOUT

THRESHOLD = 0.3


def _leaky_helper(pool: ConnectionPool):
    conn = pool.getconn()  # LEAK-SITE: this line must head the report
    return conn


def _sleepy_spot(stop: threading.Event) -> None:
    stop.wait(JOIN)  # the holder stack must show this function


def _leak_line() -> int:
    return line_of(_leaky_helper, "LEAK-SITE")


def _watchdogs() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith("-leak-watchdog")]


@pytest.mark.usefixtures("recorder")
def test_leak_report_names_the_helper_line_and_what_the_holder_does_now(make_pool, caplog):
    caplog.set_level(logging.INFO, logger="threadpool_db.leaks")
    pool = make_pool(min_size=1, max_size=1, leak_threshold=THRESHOLD, capture_stacks="full", name="leaky")
    stop = threading.Event()
    borrowed_at: list[float] = []
    holder_conn: list = []

    def leaker() -> None:
        holder_conn.append(_leaky_helper(pool))
        borrowed_at.append(time.monotonic())
        _sleepy_spot(stop)
        pool.putconn(holder_conn[0])

    t = threading.Thread(target=leaker, name="leaker-thread", daemon=True)
    t.start()
    try:
        leaks = wait_until(pool.leaks, timeout=THRESHOLD + SETTLE, what="a leak report")
        seen_after = time.monotonic() - borrowed_at[0]
        assert seen_after < THRESHOLD + 2.0  # reported promptly (spec: threshold + 0.5 s)
        rec = leaks[0]
        site = f"{__file__}:{_leak_line()}"
        assert rec["borrow_site"] == site
        assert rec["thread_name"] == "leaker-thread"
        assert rec["held_for"] >= THRESHOLD
        assert rec["reclaimed"] is False
        assert rec["backend_pid"] == holder_conn[0].info.backend_pid
        assert "_leaky_helper" in rec["borrow_stack"].splitlines()[-1]
        assert "_sleepy_spot" in rec["holder_stack"]
        warn = [r for r in caplog.records if r.levelno == logging.WARNING and "suspected leak" in r.getMessage()]
        assert len(warn) == 1
        first_line = warn[0].getMessage().splitlines()[0]
        assert first_line.startswith(site)
        assert "'leaky'" in first_line and "leaker-thread" in first_line
        assert pool.stats()["leaks_detected"] == 1
    finally:
        stop.set()
        t.join(JOIN)
    assert not t.is_alive()


def test_late_return_is_logged_and_counts_stay_right(make_pool, caplog):
    caplog.set_level(logging.INFO, logger="threadpool_db.leaks")
    pool = make_pool(min_size=1, max_size=1, leak_threshold=THRESHOLD)
    conn = pool.getconn()
    wait_until(pool.leaks, timeout=THRESHOLD + SETTLE, what="a leak report")
    pool.putconn(conn)
    assert any("previously reported leak" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    s = pool.stats()
    assert s["leaks_returned_late"] == 1 and s["in_use"] == 0 and s["idle"] == 1 and s["size"] == 1
    assert pool.leaks() == []
    with pool.connection(timeout=SHORT_TIMEOUT) as c:
        c.execute("SELECT 1")


def test_reclaim_frees_capacity_kills_the_backend_and_poisons_the_handle(make_pool, pg, app_name):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=0.2, reclaim_leaked=True, capture_stacks="full")
    leaked = _leaky_helper(pool)
    pid = leaked.info.backend_pid
    got: list[int] = []

    def waiter() -> None:
        with pool.connection(timeout=SETTLE) as conn:
            got.append(conn.info.backend_pid)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    t.join(JOIN)
    assert not t.is_alive()
    assert len(got) == 1 and got[0] != pid  # a blocked waiter got a fresh connection
    with pytest.raises(ConnectionReclaimed, match=r"reclaimed as leaked after .* borrowed at .*test_leaks.py:\d+"):
        leaked.execute("SELECT 1")
    with pytest.raises(ConnectionReclaimed):
        pool.putconn(leaked)
    wait_until(lambda: pid not in backends(pg.admin_url, app_name), what="reclaimed backend gone")
    s = pool.stats()
    assert s["leaks_reclaimed"] == 1 and s["size"] == 1 and s["in_use"] == 0
    assert pool.leaks()[0]["reclaimed"] is True


def test_reclaim_interrupts_a_leaker_stuck_in_a_query(make_pool):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=0.2, reclaim_leaked=True)
    errors: list[BaseException] = []

    def stuck() -> None:
        conn = pool.getconn()
        try:
            conn.execute("SELECT pg_sleep(60)")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=stuck, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(JOIN)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 30  # far less than the 60 s query
    assert len(errors) == 1 and isinstance(errors[0], psycopg.Error)
    with pool.connection(timeout=SETTLE) as conn:
        conn.execute("SELECT 1")


@pytest.mark.parametrize("path", ["idle", "waited"])
def test_dead_borrower_is_detected_and_its_slot_reclaimed(make_pool, caplog, path):
    """A thread that ends holding a connection: reported by its name (taken from an idle
    connection, or granted one after waiting), and the slot comes back."""
    caplog.set_level(logging.WARNING, logger="threadpool_db.leaks")
    pool = make_pool(min_size=1, max_size=1, leak_threshold=THRESHOLD, capture_stacks="full")
    held = pool.getconn() if path == "waited" else None
    t = threading.Thread(target=lambda: _leaky_helper(pool), name="dies-holding", daemon=True)
    t.start()
    if held is not None:
        wait_until(lambda: pool.stats()["waiting"] == 1, what="the thread to queue")
        pool.putconn(held)  # granted to the waiting thread
    t.join(JOIN)
    assert not t.is_alive()
    wait_until(lambda: pool.stats()["leaks_reclaimed"] == 1, timeout=THRESHOLD + SETTLE, what="reclaim")
    s = pool.stats()
    assert s["borrower_thread_died"] == 1
    rec = pool.leaks()[0]
    assert rec["thread_alive"] is False and rec["reclaimed"] is True
    assert rec["thread_name"] == "dies-holding"  # not "?": the thread is gone, its name is not
    assert any("has ENDED" in r.getMessage() and "'dies-holding'" in r.getMessage() for r in caplog.records)
    with pool.connection(timeout=SETTLE) as conn:
        conn.execute("SELECT 1")
    wait_until(lambda: pool.stats()["size"] == 1, what="size back to 1")


def test_no_watchdog_thread_when_detection_is_off(make_pool):
    before = set(_watchdogs())
    pool = make_pool(min_size=1, leak_threshold=None)  # on by default: this is how to turn it off
    with pool.connection():
        pass
    assert set(_watchdogs()) == before
    assert pool.leak_threshold is None
    assert pool.leaks() == [] and "leaks_detected" not in pool.stats()


def test_leak_detection_is_on_by_default(make_pool):
    pool = make_pool(min_size=1, name="default-on")
    assert pool.leak_threshold == 60.0
    assert any(t.name == "default-on-leak-watchdog" for t in threading.enumerate())
    held = _leaky_helper(pool)
    assert pool.borrowed()[0]["borrow_site"].endswith(f"test_leaks.py:{_leak_line()}")
    pool.putconn(held)


def test_watchdog_stops_on_close_and_after_gc(pg):
    pool = ConnectionPool(pg.url, min_size=1, leak_threshold=5.0, name="wd-close")
    assert "wd-close-leak-watchdog" in _watchdogs()
    pool.close()
    wait_until(lambda: "wd-close-leak-watchdog" not in _watchdogs(), what="watchdog gone after close")

    pool = ConnectionPool(pg.url, min_size=1, leak_threshold=5.0, name="wd-gc")
    pool.wait(SETTLE)
    assert "wd-gc-leak-watchdog" in _watchdogs()
    del pool
    gc.collect()
    wait_until(lambda: "wd-gc-leak-watchdog" not in _watchdogs(), timeout=SETTLE, what="watchdog gone after gc")


def test_pool_timeout_names_the_top_holders(make_pool):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=30.0, capture_stacks="full")
    held = _leaky_helper(pool)
    with times_out(SHORT_TIMEOUT) as ei:
        pool.getconn(timeout=SHORT_TIMEOUT)
    msg = str(ei.value)
    assert "top holders" in msg and threading.current_thread().name in msg
    assert f"test_leaks.py:{_leak_line()}" in msg
    pool.putconn(held)


@pytest.mark.usefixtures("recorder")
def test_second_borrow_by_the_same_thread_is_counted(make_pool, caplog):
    caplog.set_level(logging.WARNING, logger="threadpool_db.leaks")
    pool = make_pool(min_size=2, max_size=2, leak_threshold=30.0, capture_stacks="full")
    a = pool.getconn()
    b = pool.getconn()  # the last idle one, taken without waiting: counted, not logged
    pool.putconn(b)
    pool.putconn(a)
    assert not [r.getMessage() for r in caplog.records if "already holding" in r.getMessage()]
    assert pool.stats()["nested_borrows"] == 1
    c = pool.getconn()  # one at a time: no warning
    pool.putconn(c)
    assert pool.stats()["nested_borrows"] == 1


def test_borrowed_lists_every_connection_out(make_pool):
    pool = make_pool(min_size=2, max_size=2, leak_threshold=30.0, capture_stacks="full")
    a = _leaky_helper(pool)
    recs = pool.borrowed()
    assert len(recs) == 1
    r = recs[0]
    assert r["thread_name"] == threading.current_thread().name
    assert r["suspected_leak"] is False and r["borrow_site"].endswith(f":{_leak_line()}")
    assert "test_borrowed_lists_every_connection_out" in r["holder_stack"]
    pool.putconn(a)
    assert pool.borrowed() == []


@pytest.mark.usefixtures("recorder")
def test_sampling_rate_decides_whether_stacks_are_captured(make_pool):
    always = make_pool(min_size=1, leak_threshold=30.0, capture_stacks="sampled", stack_sample_rate=1.0)
    never = make_pool(min_size=1, leak_threshold=30.0, capture_stacks="sampled", stack_sample_rate=0.0)
    a, b = _leaky_helper(always), _leaky_helper(never)
    # the site is always recorded; sampling decides whether the whole stack is kept
    assert always.borrowed()[0]["borrow_site"].endswith(f":{_leak_line()}")
    assert never.borrowed()[0]["borrow_site"].endswith(f":{_leak_line()}")
    assert "_leaky_helper" in always.borrowed()[0]["borrow_stack"]
    assert never.borrowed()[0]["borrow_stack"] == ""
    always.putconn(a)
    never.putconn(b)


@pytest.mark.usefixtures("recorder")
def test_captured_stacks_hold_no_locals_or_sql(make_pool):
    pool = make_pool(min_size=1, leak_threshold=0.2, capture_stacks="full")
    secret_local = "local-value-4711"  # noqa: F841 - must not show in any stack
    conn = pool.getconn()
    conn.execute("SELECT 'query-text-0815'")
    rec = wait_until(pool.leaks, timeout=SETTLE, what="report")[0]
    text = rec["borrow_stack"] + rec["holder_stack"]
    assert "test_captured_stacks_hold_no_locals_or_sql" in text
    assert "local-value-4711" not in text and "query-text-0815" not in text
    pool.putconn(conn)


def test_an_idle_watchdog_sleeps_until_a_lease_could_cross_the_threshold(make_pool, monkeypatch):
    """No tick: with nothing out, the watchdog wakes at most once per threshold; a lease taken
    while it sleeps is still reported once it crosses the threshold (no borrow wakes it)."""
    scans: list[float] = []
    real_scan = LeakDetector.scan

    def counted(self: LeakDetector, table: Any) -> float:
        if table.name == "wd-idle":
            scans.append(time.monotonic())
        return real_scan(self, table)

    monkeypatch.setattr(LeakDetector, "scan", counted)
    pool = make_pool(min_size=1, max_size=1, leak_threshold=2.5, name="wd-idle")
    time.sleep(2.0)
    assert len(scans) <= 1, f"{len(scans)} wake-ups in 2 s with no lease out"
    t0 = time.monotonic()
    held = pool.getconn()
    try:
        wait_until(pool.leaks, timeout=2.5 + SETTLE, what="the report of a lease taken mid-sleep")
        assert time.monotonic() - t0 >= 2.5
        assert len(scans) <= 4  # the start, the idle cap, the lease's crossing (and one spare)
    finally:
        pool.putconn(held)


def test_a_reclaim_before_the_return_gives_pool_errors_not_attribute_errors(make_pool):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=30.0)
    conn = pool.getconn()
    slot = next(s for s in pool._leased())
    # the watchdog's reclaim, landing between the borrower's last use and its putconn
    assert pool._reclaim(slot, conn, ConnectionReclaimed("reclaimed in the test"))
    with pytest.raises(ConnectionReclaimed, match="reclaimed in the test"):
        pool.putconn(conn)
    with pytest.raises(ConnectionReclaimed):
        conn.execute("SELECT 1")
    with pytest.raises(ConnectionReclaimed):
        _ = conn.info
    assert conn.died is not None and conn.returned
    with pool.connection(timeout=SETTLE) as c:  # and the slot went to the next borrower
        c.execute("SELECT 1")
