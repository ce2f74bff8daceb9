"""Tenant quotas and priorities (threadpool_db/quotas.py, through the pool's fair queue): a greedy
tenant cannot starve a polite one, a quota is shared and can fail fast, higher priority goes
first with FIFO inside a priority, and aging keeps low priority from starving.
Quotas after os.fork(): tests/test_dropin.py::test_tenant_quota_is_rebuilt_in_a_forked_child."""

from __future__ import annotations

import threading
import time

import pytest

from threadpool_db import TenantQuotaExceeded

from .helpers import run_threads, wait_until
from .timing import JOIN, SETTLE


def test_a_greedy_tenant_cannot_starve_a_polite_one(make_pool):
    pool = make_pool(min_size=4, max_size=4, tenant_limits={"greedy": 2}, timeout=SETTLE)
    stop = threading.Event()
    held = {"greedy": 0, "peak": 0}
    lock = threading.Lock()
    polite_waits: list[float] = []

    def greedy(i: int) -> None:
        while not stop.is_set():
            with pool.connection(tenant="greedy") as conn:
                with lock:
                    held["greedy"] += 1
                    held["peak"] = max(held["peak"], held["greedy"])
                conn.execute("SELECT pg_sleep(0.02)")
                with lock:
                    held["greedy"] -= 1

    def polite(i: int) -> None:
        for _ in range(15):
            t0 = time.monotonic()
            with pool.connection(tenant="polite") as conn:
                polite_waits.append(time.monotonic() - t0)
                conn.execute("SELECT pg_sleep(0.01)")

    gs = [threading.Thread(target=greedy, args=(i,), daemon=True) for i in range(8)]
    for t in gs:
        t.start()
    try:
        wait_until(lambda: pool.stats()["waiting"] >= 4, what="greedy waiters queued")
        assert run_threads(2, polite) == []
    finally:
        stop.set()
        for t in gs:
            t.join(JOIN)
    assert not any(t.is_alive() for t in gs)
    assert held["peak"] == 2  # the quota held
    # polite never queued behind the greedy waiters: its borrows were (nearly) immediate
    assert max(polite_waits) < 1.0
    tenants = pool.stats()["tenants"]
    assert tenants["greedy"]["limit"] == 2 and tenants["polite"]["borrows"] == 30
    assert tenants["greedy"]["waits"] > 0


def test_quota_is_shared_and_tenant_wait_false_fails_fast(make_pool):
    pool = make_pool(min_size=4, max_size=4, tenant_limits={"a": 3, "b": 3}, tenant_wait=False)
    a = [pool.getconn(tenant="a") for _ in range(3)]  # b leaves its share idle: a may use it
    t0 = time.monotonic()
    with pytest.raises(TenantQuotaExceeded, match="tenant 'a' already holds its quota of 3"):
        pool.getconn(tenant="a")
    assert time.monotonic() - t0 < 0.5
    b = pool.getconn(tenant="b")
    for c in [*a, b]:
        pool.putconn(c)
    s = pool.stats()
    assert s["tenants"]["a"]["rejected"] == 1 and s["tenants"]["a"]["in_use"] == 0


def _queue_in_order(pool, specs, got):
    """Start one waiter per (name, priority), each queued before the next starts."""
    threads = []
    for name, prio in specs:

        def run(name=name, prio=prio) -> None:
            with pool.connection(timeout=SETTLE, priority=prio):
                got.append(name)
                time.sleep(0.02)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        n = len(threads)
        wait_until(lambda n=n: pool.stats()["waiting"] == n, what=f"{n} waiting")
    return threads


def test_higher_priority_first_and_fifo_within_a_priority(make_pool):
    pool = make_pool(min_size=1, max_size=1, priority_aging=1000.0)
    held = pool.getconn()
    got: list[str] = []
    threads = _queue_in_order(pool, [("low1", 0), ("high1", 5), ("mid", 1), ("high2", 5), ("low2", 0)], got)
    pool.putconn(held)
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads)
    assert got == ["high1", "high2", "mid", "low1", "low2"]


def test_aging_keeps_low_priority_from_starving(make_pool):
    pool = make_pool(min_size=1, max_size=1, priority_aging=0.1)
    stop = threading.Event()
    low_done: list[float] = []

    def high(i: int) -> None:
        while not stop.is_set():
            with pool.connection(timeout=SETTLE, priority=3):
                time.sleep(0.02)

    hs = [threading.Thread(target=high, args=(i,), daemon=True) for i in range(4)]
    for t in hs:
        t.start()
    try:
        wait_until(lambda: pool.stats()["waiting"] >= 3, what="high waiters queued")
        t0 = time.monotonic()
        with pool.connection(timeout=SETTLE, priority=0):
            low_done.append(time.monotonic() - t0)
    finally:
        stop.set()
        for t in hs:
            t.join(JOIN)
    assert not any(t.is_alive() for t in hs)
    # 3 levels behind, aging 0.1 s per level: served after about 0.3 s, not never
    assert low_done and low_done[0] < 3.0
