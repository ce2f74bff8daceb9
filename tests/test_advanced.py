"""Tenant quotas, priorities with aging, burst resizing, resize(), Future borrow, advise()."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from concurrent.futures import CancelledError

import pytest

from threadpool_db import PoolClosed, PoolTimeout, TenantQuotaExceeded
from threadpool_db.advisor import recommend

from .helpers import run_threads, sql, times_out, wait_until
from .timing import JOIN, SETTLE

# -- tenants -------------------------------------------------------------------------------------


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


# -- priorities ----------------------------------------------------------------------------------


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


# -- burst and resize ---------------------------------------------------------------------------


def test_burst_grows_past_max_size_up_to_the_hard_cap_and_decays(make_pool):
    pool = make_pool(min_size=1, max_size=2, burst_size=4, burst_wait_threshold=0.05, burst_lifetime=30.0,
                     max_idle=600.0)  # fmt: skip
    peak = 0
    stop = threading.Event()

    def sampler() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, pool.stats()["size"])
            time.sleep(0.01)

    s = threading.Thread(target=sampler, daemon=True)
    s.start()

    def load(i: int) -> None:
        for _ in range(8):
            with pool.connection(timeout=SETTLE) as conn:
                conn.execute("SELECT pg_sleep(0.1)")

    try:
        assert run_threads(10, load) == []
    finally:
        stop.set()
        s.join(JOIN)
    assert peak == 4  # it burst, and never beyond burst_size
    # demand is gone: burst connections close one at a time, down to max_size, and stay there
    sizes = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and pool.stats()["size"] > 2:
        sizes.append(pool.stats()["size"])
        time.sleep(0.05)
    assert pool.stats()["size"] == 2
    assert all(b <= a for a, b in itertools.pairwise(sizes))  # never grows back
    for _ in range(5):  # five more housekeeping rounds (a quiet pool's thread sleeps till its deadline)
        pool._housekeep()
    assert pool.stats()["size"] == 2


def test_resize_at_runtime(make_pool):
    pool = make_pool(min_size=1, max_size=2)
    conns = [pool.getconn() for _ in range(2)]
    with times_out(0.2):
        pool.getconn(timeout=0.2)
    pool.resize(1, 4)  # psycopg_pool's signature: resize(min_size, max_size=None)
    more = [pool.getconn(timeout=SETTLE) for _ in range(2)]
    for c in more:
        pool.putconn(c)
    assert pool.stats()["size"] == 4
    pool.resize(min_size=1, max_size=1)  # idle surplus closes now, borrowed surplus on return
    assert pool.stats()["size"] == 2
    for c in conns:
        pool.putconn(c)
    assert pool.stats()["size"] == 1 and pool.max_size == 1
    with pytest.raises(ValueError, match="max_size"):
        pool.resize(min_size=3, max_size=2)


# -- Future borrow -------------------------------------------------------------------------------


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


# -- the sizing advisor --------------------------------------------------------------------------


def test_advisor_applies_littles_law_with_headroom():
    a = recommend(arrival_rate=200.0, mean_hold_s=0.010, current_max_size=8)
    assert a.busy_connections == pytest.approx(2.0)
    assert a.recommended_max_size == 4
    assert "Little's law" in a.reasoning[0]


def test_advisor_does_not_grow_past_what_the_servers_cores_can_run_and_says_whose_cores():
    kw = {"arrival_rate": 1000.0, "mean_hold_s": 0.050, "server_cores": 4, "spindles": 1, "workers": 3,
          "cores_of": "this machine's: the server is on loopback"}  # fmt: skip
    small = recommend(current_max_size=2, **kw)
    assert small.rule_of_thumb_total == 9 and small.per_worker_cap == 3
    # 1000/s x 50 ms x 2 = 100 by demand, but 3 workers share what 4 cores can run: 9 // 3
    assert small.recommended_max_size == 3
    assert any("not growing past 3" in r for r in small.reasoning)
    assert any("(this machine's: the server is on loopback)" in r for r in small.reasoning)
    # a pool already above its share is not grown further, nor shrunk for it; nothing warns
    big = recommend(current_max_size=8, **kw)
    assert big.recommended_max_size == 8 and big.warnings == []
    assert any("not growing past 8" in r for r in big.reasoning)
    moderate = recommend(current_max_size=8, **{**kw, "arrival_rate": 60.0})  # 60/s x 50 ms x 2 = 6
    assert moderate.recommended_max_size == 6 and moderate.warnings == []
    assert any("kept, not shrunk" in r for r in moderate.reasoning)


def test_the_advice_and_its_warnings_agree_for_every_size():
    """Whatever the demand, the recommendation fits the server's hard limit, never grows past
    the cores' share, and a warning names only a size the advice moves away from."""
    for rate in (1.0, 50.0, 400.0, 5000.0):
        for workers in (1, 2, 8):
            for current in (1, 4, 8, 32):
                a = recommend(arrival_rate=rate, mean_hold_s=0.02, current_max_size=current, workers=workers,
                              server_cores=2, spindles=1, max_connections=50, reserved=3, wait_p99_ms=50.0)  # fmt: skip
                rec = a.recommended_max_size
                assert rec * workers <= max(47, workers), (rate, workers, current, a)
                assert rec <= max(a.per_worker_cap, current), (rate, workers, current, a)
                for w in a.warnings:  # only the hard limit warns, about a size the advice leaves
                    assert "max_connections" in w and current * workers > 47 and rec < current, (a, w)


def test_with_too_little_traffic_the_advice_says_so_and_keeps_the_size():
    a = recommend(arrival_rate=0.0, mean_hold_s=0.0, current_max_size=8, wait_p99_ms=12.8, attempts=3)
    assert a.enough_data is False and a.recommended_max_size == 8
    assert "too little traffic" in a.reasoning[0] and "3 borrow attempt" in a.reasoning[0]
    assert not any("wait now" in r for r in a.reasoning)  # no verdict on waits it did not measure


def test_advisor_counts_timeouts_as_demand_and_does_not_shrink_while_borrowers_wait():
    served_only = recommend(arrival_rate=100.0, mean_hold_s=0.010, current_max_size=2)
    assert served_only.recommended_max_size == 2
    # the same pool, with the demand it turned away counted: 300 attempts/s, 200 of them timed out
    with_timeouts = recommend(arrival_rate=300.0, mean_hold_s=0.010, current_max_size=2, timeout_rate=200.0,
                              wait_p99_ms=900.0)  # fmt: skip
    assert with_timeouts.recommended_max_size == 6
    waiting = recommend(arrival_rate=50.0, mean_hold_s=0.010, current_max_size=8, wait_p99_ms=50.0)
    assert waiting.recommended_max_size == 8  # Little's law alone says 1, but borrowers wait now
    calm = recommend(arrival_rate=50.0, mean_hold_s=0.010, current_max_size=8, wait_p99_ms=1.0)
    assert calm.recommended_max_size == 1  # nobody waits: shrinking is backed by the measurements


def test_advisor_warns_when_workers_times_max_size_exceeds_the_server():
    a = recommend(arrival_rate=10.0, mean_hold_s=0.01, current_max_size=8, workers=8, max_connections=50, reserved=3)
    assert a.server_limit == 47
    assert any("8 workers x current max_size 8 = 64 exceeds" in w for w in a.warnings)
    busy = recommend(arrival_rate=4000.0, mean_hold_s=0.01, current_max_size=8, workers=8, max_connections=50,
                     reserved=3)  # fmt: skip
    assert busy.recommended_max_size == 5  # 80 by demand; 47 // 8 is what the server accepts
    quiet = recommend(arrival_rate=10.0, mean_hold_s=0.01, current_max_size=4, workers=8, max_connections=50,
                      reserved=3)  # fmt: skip
    assert quiet.warnings == []


def test_pool_advise_measures_a_real_workload(make_pool):
    pool = make_pool(min_size=2, max_size=4)

    def work(i: int) -> None:
        for _ in range(20):
            with pool.connection() as conn:
                conn.execute("SELECT pg_sleep(0.005)")

    assert run_threads(4, work) == []
    adv = pool.advise(workers=50)
    assert adv["enough_data"] is True and adv["attempts"] >= 80
    assert adv["arrival_rate_per_s"] > 0 and adv["mean_hold_ms"] >= 5.0
    assert adv["server_limit"] is not None
    assert any("exceeds the server" in w for w in adv["warnings"])  # 50 x 4 > 200 - 3
    assert adv["recommended_max_size"] >= 1 and adv["reasoning"]


def test_a_fresh_pool_says_it_has_too_little_data(make_pool):
    pool = make_pool(min_size=1, max_size=4)
    adv = pool.advise(query_server=False)
    assert adv["enough_data"] is False and adv["recommended_max_size"] == 4
    assert adv["reasoning"][0].startswith("too little traffic measured")


def test_pool_advise_counts_timed_out_borrows_as_demand(make_pool):
    pool = make_pool(min_size=1, max_size=1)

    def work(i: int) -> None:
        for _ in range(15):  # 60 attempts: enough for the advisor to size from
            try:
                with pool.connection(timeout=0.02) as conn:
                    conn.execute("SELECT pg_sleep(0.03)")
            except PoolTimeout:
                pass

    assert run_threads(4, work) == []
    s = pool.stats()
    assert s["timeouts"] > 0
    adv = pool.advise(query_server=False)
    assert adv["timeouts_per_s"] > 0
    assert adv["recommended_max_size"] >= 2  # one connection turned demand away: not "1 (now 1)"
