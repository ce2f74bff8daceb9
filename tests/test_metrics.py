"""Prometheus metrics: the exposition parses, and the values move under load."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from threadpool_db import PoolTimeout
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


def test_counters_count_every_single_event(make_pool):
    """Exact counts after a known number of events, one at a time: an updater that dropped
    single increments (or counted twice) shows here."""
    pool = make_pool(min_size=1, max_size=1, name="prom-exact")
    registry = CollectorRegistry()
    m = PoolMetrics(pool, registry=registry, interval=3600.0)  # updated by hand below only
    timeouts = ("threadpool_db_connections_timeouts_total", "prom-exact")
    created = ("threadpool_db_connections_created_total", "prom-exact")
    closed = ("threadpool_db_connections_closed_total", "prom-exact")
    try:
        held = pool.getconn()
        for n in range(1, 4):
            with pytest.raises(PoolTimeout):
                pool.getconn(timeout=0.05)
            m.update()
            assert _samples(generate_latest(registry).decode())[timeouts] == n
        pool.putconn(held)
        for n in range(1, 3):
            pool.drain()  # closes the one idle connection (and opens its replacement)
            wait_until(lambda n=n: pool.stats()["created"] == n + 1, what=f"replacement {n}")
            m.update()
            now = _samples(generate_latest(registry).decode())
            assert now[closed] == n
            assert now[created] == n + 1
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


def _labelled(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_tenant_labels_and_resource_gauges_under_load(make_pool):
    pool = make_pool(min_size=1, max_size=2, name="tenants", tenant_limits={"acme": 1, "globex": 2},
                     leak_threshold=30.0)  # fmt: skip
    registry = CollectorRegistry()
    m = PoolMetrics(pool, registry=registry)
    try:

        def work(i: int) -> None:
            tenant = ("acme", "globex", f"walk-in-{i}")[i % 3]  # walk-ins fold into "other"
            for _ in range(6):
                with pool.connection(tenant=tenant) as conn:
                    conn.execute("SELECT pg_sleep(0.005)")

        assert run_threads(9, work) == []
        held = pool.getconn(tenant="acme")
        m.update()
        got = _labelled(generate_latest(registry).decode())
        tenants = {dict(k[1]).get("tenant") for k in got if k[0].startswith("threadpool_db_tenant_")}
        assert tenants == {"acme", "globex", "other"}  # bounded: no walk-in-N label
        acq = {t: got[("threadpool_db_tenant_acquire_seconds_count", (("pool", "tenants"), ("tenant", t)))]
               for t in ("acme", "globex", "other")}  # fmt: skip
        assert acq == {"acme": 19, "globex": 18, "other": 18}
        assert got[("threadpool_db_tenant_connections_active", (("pool", "tenants"), ("tenant", "acme")))] == 1
        waits = sum(v for k, v in got.items() if k[0] == "threadpool_db_tenant_waits_total")
        assert waits >= 1  # two connections, nine threads: some queued
        assert got[("threadpool_db_threads", (("pool", "tenants"),))] >= 3  # creators, housekeeper, watchdog
        assert got[("threadpool_db_sockets", (("pool", "tenants"),))] == pool.stats()["size"]
        assert got[("threadpool_db_config_error", (("pool", "tenants"),))] == 0
        pool.putconn(held)
    finally:
        m.close()


def test_config_error_gauge_is_set_while_the_database_refuses_us(pg):
    from urllib.parse import urlsplit

    from threadpool_db import ConnectionPool

    u = urlsplit(pg.url)
    pool = ConnectionPool(f"postgresql://app:bad-Passw0rd@{u.hostname}:{u.port}/app", min_size=1, name="refused")
    registry = CollectorRegistry()
    m = PoolMetrics(pool, registry=registry)
    try:
        wait_until(lambda: pool.stats()["config_error"], what="the permanent failure")
        m.update()
        got = _labelled(generate_latest(registry).decode())
        assert got[("threadpool_db_config_error", (("pool", "refused"),))] == 1
    finally:
        m.close()
        pool.close()
