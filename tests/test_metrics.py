"""Prometheus metrics: the exposition parses, and the values move under load."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from threadpool_db.metrics import PoolMetrics

from .gunicorn_proc import gunicorn
from .helpers import run_threads, wait_until


def _samples(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, s.labels.get("pool", ""))
            out[key] = out.get(key, 0.0) + s.value  # summed over worker processes
    return out


def test_pool_metrics_parse_and_move_under_load(make_pool):
    pool = make_pool(min_size=1, max_size=3, name="prom", leak_threshold=30.0)
    registry = CollectorRegistry()
    m = PoolMetrics(pool, registry=registry)
    try:
        before = _samples(generate_latest(registry).decode())
        assert before[("threadpool_db_connections_max", "prom")] == 3
        held = pool.getconn()
        m.update()
        mid = _samples(generate_latest(registry).decode())
        assert mid[("threadpool_db_connections_active", "prom")] == 1

        def work(i: int) -> None:
            for _ in range(10):
                with pool.connection() as conn:
                    conn.execute("SELECT 1")

        assert run_threads(4, work) == []
        pool.putconn(held)
        m.update()
        after = _samples(generate_latest(registry).decode())
        acq = ("threadpool_db_connections_acquire_seconds_count", "prom")
        use = ("threadpool_db_connections_usage_seconds_count", "prom")
        assert after[acq] - before.get(acq, 0) == 41
        assert after[use] - before.get(use, 0) == 41
        assert after[("threadpool_db_connections_active", "prom")] == 0
        assert after[("threadpool_db_connections_created_total", "prom")] >= 1
        assert after[("threadpool_db_connections_creation_seconds_count", "prom")] >= 1
        assert ("threadpool_db_leaks_total", "prom") in after
    finally:
        m.close()


def test_demo_metrics_endpoint_aggregates_gunicorn_workers(pg):
    with gunicorn(pg.url, workers=2, threads=4, max_size=2) as base:

        def hit(i: int) -> None:
            for _ in range(15):
                urllib.request.urlopen(f"{base}/pooled/read", timeout=30).read()

        assert run_threads(6, hit) == []

        def scrape() -> dict[tuple[str, str], float]:
            return _samples(urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode())

        # gauges refresh once a second in each worker: wait for both workers' first refresh
        s = wait_until(lambda: (x := scrape()).get(("threadpool_db_connections", "demo"), 0) >= 3 and x,
                       what="gauges of both workers")  # fmt: skip
    acquired = s.get(("threadpool_db_connections_acquire_seconds_count", "demo"), 0)
    assert acquired >= 90  # every worker's borrows, whichever worker answered the scrape
    assert 0 < s[("threadpool_db_connections", "demo")] <= 2 * 2
