"""Leak reports that explain themselves, against the real server, with a gthread-like thread
pool of 3 (a ThreadPoolExecutor serves requests the way gunicorn's gthread worker does): the
borrow site always, escaped versus busy, no false nested-borrow alarm, stacks for people, and
a reported leak that comes back marked returned everywhere."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from threadpool_db import ConnectionPool, PoolTimeout
from threadpool_db.metrics import PoolMetrics

from .helpers import line_of, wait_until
from .timing import JOIN, SETTLE

# every test here runs with the C and the pure-Python borrow-site recorder (conftest.recorder)
pytestmark = pytest.mark.usefixtures("recorder")

THRESHOLD = 0.3
KEPT: list = []  # where an escaped connection goes: a module-level list, as a careless app would


def escaping_view(pool: ConnectionPool) -> None:
    conn = pool.getconn()  # ESCAPE-SITE
    KEPT.append(conn)  # stored, never returned: the view returns, the thread serves others


def busy_view(pool: ConnectionPool, stop: threading.Event) -> None:
    with pool.connection() as conn:  # BUSY-SITE
        conn.execute("SELECT 1")
        stop.wait(JOIN)  # a long operation, still holding it


def test_the_borrow_site_is_reported_without_stack_capture(make_pool):
    pool = make_pool(min_size=1, max_size=2, leak_threshold=THRESHOLD, capture_stacks="off", name="sites")
    with ThreadPoolExecutor(3, thread_name_prefix="gthread") as ex:
        ex.submit(escaping_view, pool).result(JOIN)
        rec = wait_until(pool.leaks, timeout=SETTLE, what="a report")[0]
    assert rec["borrow_site"] == f"{__file__}:{line_of(escaping_view, 'ESCAPE-SITE')}"
    assert rec["borrow_function"] == "escaping_view"
    pool.putconn(KEPT.pop())


def test_an_escaped_connection_is_told_apart_from_a_busy_one(make_pool, caplog):
    caplog.set_level(logging.WARNING, logger="threadpool_db.leaks")
    pool = make_pool(min_size=2, max_size=3, leak_threshold=THRESHOLD, capture_stacks="full", name="kinds")
    stop = threading.Event()
    with ThreadPoolExecutor(3, thread_name_prefix="gthread") as ex:
        try:
            ex.submit(escaping_view, pool).result(JOIN)
            ex.submit(busy_view, pool, stop)
            recs = wait_until(lambda: len(pool.leaks()) == 2 and pool.leaks(), timeout=SETTLE, what="two reports")
            by_fn = {r["borrow_function"]: r for r in recs}
            esc, busy = by_fn["escaping_view"], by_fn["busy_view"]
            assert esc["state"] == "escaped" and esc["escaped"] is True
            assert esc["summary"].startswith(f"escaped: borrowed at {esc['borrow_site']} in escaping_view(), which "
                                             "has returned; the thread is now")  # fmt: skip
            assert busy["state"] == "busy" and busy["escaped"] is False
            assert busy["summary"].startswith(f"busy: borrowed at {busy['borrow_site']} in busy_view(), which is "
                                              "still running")  # fmt: skip
            assert "busy_view" in busy["holder_stack"]  # where it is now
            first_lines = [r.getMessage().splitlines()[0] for r in caplog.records if "suspected leak" in r.getMessage()]
            assert any("escaped: borrowed at" in line for line in first_lines)
            assert any("busy: borrowed at" in line for line in first_lines)
        finally:
            stop.set()
    pool.putconn(KEPT.pop())


def test_a_nested_borrow_with_room_is_counted_not_logged_and_an_escape_is_neither(make_pool, caplog):
    """gunicorn gthread reuses threads: after a view let its connection escape, the next view
    on the same thread is not a nested borrow. One that borrows twice in one frame is, and is
    counted; it takes the last idle connection without waiting, so it cannot deadlock: no log
    line (psycopg_pool code nests on purpose in pools with room)."""
    caplog.set_level(logging.WARNING, logger="threadpool_db.leaks")
    pool = make_pool(min_size=2, max_size=2, leak_threshold=30.0, name="nested")
    with ThreadPoolExecutor(1, thread_name_prefix="gthread") as ex:  # one thread: same ident
        ex.submit(escaping_view, pool).result(JOIN)

        def next_request() -> None:
            with pool.connection() as conn:  # takes the last idle connection
                conn.execute("SELECT 1")

        ex.submit(next_request).result(JOIN)
        assert pool.stats()["nested_borrows"] == 0
        pool.putconn(KEPT.pop())

        def nested_view() -> None:
            a = pool.getconn()
            b = pool.getconn()  # the last idle one, taken at once
            pool.putconn(b)
            pool.putconn(a)

        for _ in range(3):
            ex.submit(nested_view).result(JOIN)
    assert pool.stats()["nested_borrows"] == 3
    assert not [r for r in caplog.records if "already holding" in r.getMessage()]


def test_a_nested_borrow_that_must_wait_warns_once_per_site_and_the_timeout_names_the_held_one(make_pool, caplog,
                                                                                                 recorder):  # fmt: skip
    caplog.set_level(logging.WARNING, logger="threadpool_db.leaks")
    pool = make_pool(min_size=2, max_size=2, leak_threshold=30.0, name="deadlock")
    other = pool.getconn()  # held elsewhere: the pool has nothing left for a second borrow

    def nested_view() -> str:
        a = pool.getconn()  # FIRST-BORROW
        try:
            with pytest.raises(PoolTimeout) as ei:
                pool.getconn(timeout=0.1)  # SECOND-BORROW: it must wait, for itself among others
            return str(ei.value)
        finally:
            pool.putconn(a)

    with ThreadPoolExecutor(1, thread_name_prefix="gthread") as ex:
        messages = [ex.submit(nested_view).result(JOIN) for _ in range(2)]
    pool.putconn(other)
    first = f"{__file__}:{line_of(nested_view, 'FIRST-BORROW')}"
    second = f"{__file__}:{line_of(nested_view, 'SECOND-BORROW')}"
    warned = [r.getMessage() for r in caplog.records if "already holding" in r.getMessage()]
    assert len(warned) == 1, warned  # once per call site, however often it happens
    assert warned[0].startswith(f"{second}: thread 'gthread_0' waits for a connection of pool 'deadlock'")
    assert f"(borrowed at {first}, still running)" in warned[0]
    for msg in messages:
        assert "this thread already holds connection" in msg and f"borrowed at {first}" in msg
    assert pool.stats()["nested_borrows"] == 2


def test_stacks_show_the_users_frames_and_collapse_the_framework(make_pool):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=THRESHOLD, capture_stacks="full", name="people")
    with ThreadPoolExecutor(3, thread_name_prefix="gthread") as ex:
        ex.submit(escaping_view, pool).result(JOIN)
        rec = wait_until(pool.leaks, timeout=SETTLE, what="a report")[0]
    short, full = rec["borrow_stack"], rec["borrow_stack_full"]
    assert "escaping_view" in short.splitlines()[-1]  # the user's frame, innermost last
    assert "framework frame" in short  # concurrent.futures and threading, collapsed to a count
    assert "threading.py" not in short and "threading.py" in full  # the whole stack stays available
    assert "framework frame" in rec["holder_stack"] or "<thread" in rec["holder_stack"]
    pool.putconn(KEPT.pop())


def test_a_reported_leak_that_comes_back_is_marked_returned_everywhere(make_pool):
    pool = make_pool(min_size=1, max_size=1, leak_threshold=THRESHOLD, name="back")
    registry = CollectorRegistry()
    m = PoolMetrics(pool, registry=registry)
    try:
        with ThreadPoolExecutor(3, thread_name_prefix="gthread") as ex:
            ex.submit(escaping_view, pool).result(JOIN)
            wait_until(pool.leaks, timeout=SETTLE, what="a report")
        pool.putconn(KEPT.pop())  # it came back
        assert pool.leaks() == []  # no longer a current suspect
        rec = pool.leak_reports()[-1]
        assert rec["returned"] is True and rec["returned_after"] >= THRESHOLD
        assert pool.stats()["leaks_returned_late"] == 1
        m.update()
        text = generate_latest(registry).decode()
        assert 'threadpool_db_leaks_returned_total{pool="back"} 1.0' in text
    finally:
        m.close()
