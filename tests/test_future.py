"""Borrowing through a Future (threadpool_db/future.py): served in the same fair queue as
getconn, counted and checked like any borrow, cancelled or timed out without losing a slot,
failed with PoolClosed when the pool closes, and usable from asyncio."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError

import pytest

from threadpool_db import PoolClosed

from .helpers import sql, times_out, wait_until
from .timing import JOIN, SETTLE


def test_future_borrow_resolves_in_the_fair_queue(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    order: list[str] = []
    f1 = pool.getconn_future(timeout=SETTLE)
    f1.add_done_callback(lambda f: order.append("future"))
    wait_until(lambda: pool.stats()["waiting"] == 1, what="future queued")

    def sync() -> None:
        c = pool.getconn(timeout=SETTLE)
        order.append("sync")
        pool.putconn(c)

    t = threading.Thread(target=sync, daemon=True)
    t.start()
    wait_until(lambda: pool.stats()["waiting"] == 2, what="sync queued behind")
    pool.putconn(held)
    conn = f1.result(SETTLE)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    pool.putconn(conn)
    t.join(JOIN)
    assert not t.is_alive()
    assert order == ["future", "sync"]


def test_a_future_borrow_counts_its_wait_like_any_other(make_pool):
    """One path finishes every borrow: a future that waited adds its wait to the totals, as
    getconn does (it once counted as queued but never added its wait)."""
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    before = pool.get_stats()
    f = pool.getconn_future(timeout=SETTLE)
    wait_until(lambda: pool.stats()["waiting"] == 1, what="the future to queue")
    time.sleep(0.3)  # it waits at least this long
    pool.putconn(held)
    conn = f.result(SETTLE)
    pool.putconn(conn)
    after = pool.get_stats()
    assert after["requests_queued"] - before.get("requests_queued", 0) == 1
    assert after["requests_wait_ms"] - before.get("requests_wait_ms", 0) >= 300
    assert pool.stats()["borrows"] == 2  # the held one and the future's, each counted once


def test_a_future_served_at_once_gets_a_checked_connection(make_pool, pg):
    """A future served from the idle set is validated like a getconn borrow: a killed idle
    connection is discarded, and the future resolves to a fresh one."""
    pool = make_pool(min_size=1, max_size=1, check="always")
    with pool.connection() as conn:
        pid = conn.info.backend_pid
    sql(pg.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: sql(pg.admin_url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0] == 0,
               what="the backend to end")  # fmt: skip
    conn = pool.getconn_future(timeout=SETTLE).result(SETTLE)
    assert conn.info.backend_pid != pid
    assert conn.execute("SELECT 1").fetchone() == (1,)
    pool.putconn(conn)
    assert pool.stats()["check_failed"] == 1


def test_a_future_queued_as_the_pool_closes_fails_with_pool_closed(make_pool, monkeypatch):
    """close() lands after the future queued, before its notifier thread started: the future
    still gets its PoolClosed (the notifier starts, resolves it, and ends)."""
    from threadpool_db import future

    pool = make_pool(min_size=1, max_size=1, name="closing-future")
    pool.getconn()  # the only connection: the future has to queue
    start = future.Futures._start

    def close_first(self: future.Futures) -> None:
        pool.close(timeout=1.0)
        start(self)

    monkeypatch.setattr(future.Futures, "_start", close_first)
    f = pool.getconn_future(timeout=SETTLE)
    with pytest.raises(PoolClosed, match="closed while waiting"):
        f.result(SETTLE)
    notifiers = [t for t in threading.enumerate() if t.name == "closing-future-futures"]
    assert len(notifiers) <= 1
    for t in notifiers:
        t.join(JOIN)
        assert not t.is_alive()  # it ended after resolving the future


def test_future_cancel_before_grant_gives_its_place_back(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    f = pool.getconn_future(timeout=SETTLE)
    wait_until(lambda: pool.stats()["waiting"] == 1, what="queued")
    assert f.cancel()
    assert pool.stats()["waiting"] == 0
    pool.putconn(held)
    with pytest.raises(CancelledError):
        f.result(0)
    s = pool.stats()
    assert s["idle"] == 1 and s["in_use"] == 0


def test_future_cancel_after_grant_loses_no_slot(make_pool):
    pool = make_pool(min_size=2, max_size=2)
    f = pool.getconn_future()
    conn = f.result(SETTLE)
    assert not f.cancel()  # too late: it holds a connection, which must be given back
    pool.putconn(conn)
    # and racing cancels against grants many times over: never a lost slot
    for i in range(100):
        held = [pool.getconn(), pool.getconn()]
        fut = pool.getconn_future(timeout=SETTLE)
        threading.Thread(target=lambda h=held[i % 2]: pool.putconn(h), daemon=True).start()
        if not fut.cancel():
            pool.putconn(fut.result(SETTLE))
        pool.putconn(held[(i + 1) % 2])
        wait_until(lambda: pool.stats()["in_use"] == 0, what=f"round {i}: nothing in use")
    s = pool.stats()
    assert s["idle"] == 2 and s["size"] == 2 and s["waiting"] == 0


def test_future_times_out_and_bridges_to_asyncio(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    with times_out(0.2):
        pool.getconn_future(timeout=0.2).result(SETTLE)
    pool.putconn(held)

    async def main() -> int:
        conn = await asyncio.wrap_future(pool.getconn_future(timeout=SETTLE))
        try:
            return conn.execute("SELECT 42").fetchone()[0]
        finally:
            pool.putconn(conn)

    assert asyncio.run(main()) == 42
    assert pool.stats()["timeouts"] == 1
