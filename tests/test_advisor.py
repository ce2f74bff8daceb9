"""The sizing advisor (threadpool_db/advisor.py): Little's law with headroom, the server's cores
as a ceiling, warnings that agree with the advice, and pool.advise() on a real workload."""

from __future__ import annotations

import pytest

from threadpool_db import PoolTimeout
from threadpool_db.advisor import recommend

from .helpers import run_threads


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
