"""Read/write split against a real streaming replica (pg_basebackup -R of the test's server)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from threadpool_db import ConnectionPool
from threadpool_db.embedded import EmbeddedPostgres
from threadpool_db.routing import NoHealthyReplica, RoutingPool

from .helpers import run_threads, wait_until
from .timing import SETTLE


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[EmbeddedPostgres, EmbeddedPostgres]]:
    primary = EmbeddedPostgres().start()
    standby = None
    try:
        primary.sql("CREATE TABLE items (id int PRIMARY KEY)")
        primary.sql("GRANT ALL ON items TO app")
        standby = primary.make_standby()
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def _routing(cluster, **kw) -> RoutingPool:
    primary, standby = cluster
    p = ConnectionPool(primary.url(), min_size=1, max_size=4, name="primary")
    reps = [ConnectionPool(standby.url(), min_size=1, max_size=4, name=f"replica-{i}") for i in range(2)]
    for pool in (p, *reps):
        pool.wait(SETTLE)
    kw.setdefault("health_interval", 0.2)
    kw.setdefault("health_timeout", 0.5)
    return RoutingPool(p, reps, **kw)


def _in_recovery(conn) -> bool:
    return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]


def test_reads_go_to_replicas_round_robin_and_writes_to_the_primary(cluster):
    rp = _routing(cluster)
    try:
        with rp.connection() as conn:
            assert _in_recovery(conn) is False
        names = []
        for _ in range(4):
            time.sleep(0.01)
            rp._local.last_write = None  # no read-your-writes window here
            conn = rp.getconn(readonly=True)
            assert _in_recovery(conn) is True
            names.append(conn._pool.name)
            rp.putconn(conn)
        assert names == ["replica-0", "replica-1", "replica-0", "replica-1"]
        s = rp.stats()
        assert s["writes"] == 1 and s["replica_reads"] == 4
    finally:
        rp.close()


def test_least_in_use_picks_the_idler_replica(cluster):
    rp = _routing(cluster, strategy="least_in_use")
    try:
        held = rp.replicas[0].getconn()
        for _ in range(3):
            with rp.connection(readonly=True) as conn:
                assert conn._pool is rp.replicas[1]
        rp.replicas[0].putconn(held)
    finally:
        rp.close()


def test_read_your_writes_window_hides_replica_lag(cluster):
    _primary, standby = cluster
    rp = _routing(cluster, read_your_writes=5.0)
    try:
        standby.sql("SELECT pg_wal_replay_pause()")  # a replica that lags, for sure
        with rp.connection() as conn:
            conn.execute("INSERT INTO items VALUES (1)")
        with rp.connection(readonly=True) as conn:  # inside the window: the primary
            assert _in_recovery(conn) is False
            assert conn.execute("SELECT count(*) FROM items WHERE id = 1").fetchone() == (1,)
        rp.read_your_writes = 0.0  # without the window: the lagging replica, row not there yet
        with rp.connection(readonly=True) as conn:
            assert _in_recovery(conn) is True
            assert conn.execute("SELECT count(*) FROM items WHERE id = 1").fetchone() == (0,)
    finally:
        standby.sql("SELECT pg_wal_replay_resume()")
        rp.close()
    wait_until(lambda: standby.sql("SELECT count(*) FROM items WHERE id = 1") == [(1,)], what="replay caught up")


def test_dead_replica_is_taken_out_reads_fall_back_and_it_rejoins(cluster):
    _primary, standby = cluster
    rp = _routing(cluster)
    strict = _routing(cluster, fallback="fail")
    try:
        standby.stop_server()
        wait_until(lambda: not any(rp.healthy().values()), what="replicas marked down")
        with rp.connection(readonly=True) as conn:  # fallback: the primary answers reads
            assert _in_recovery(conn) is False
        assert rp.stats()["fallbacks"] >= 1
        wait_until(lambda: not any(strict.healthy().values()), what="strict replicas down")
        with pytest.raises(NoHealthyReplica):
            strict.getconn(readonly=True)
        standby._start_server()
        wait_until(lambda: all(rp.healthy().values()), timeout=SETTLE * 2, what="replicas back")
        with rp.connection(readonly=True) as conn:
            assert _in_recovery(conn) is True
    finally:
        if not standby.running:
            standby._start_server()
        rp.close()
        strict.close()


def test_bad_routing_parameters_are_refused(cluster):
    primary, _ = cluster
    p = ConnectionPool(primary.url(), min_size=0, max_size=1, open=False)
    with pytest.raises(ValueError, match="strategy"):
        RoutingPool(p, [], strategy="random")
    with pytest.raises(ValueError, match="fallback"):
        RoutingPool(p, [], fallback="maybe")
    with pytest.raises(ValueError, match="read_your_writes"):
        RoutingPool(p, [], read_your_writes=-1)


def test_routing_metrics_label_borrows_and_acquire_time_by_route(cluster):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from threadpool_db.metrics import RoutingMetrics

    rp = _routing(cluster, name="routed")
    registry = CollectorRegistry()
    m = RoutingMetrics(rp, registry=registry)
    try:

        def work(i: int) -> None:
            for k in range(5):
                with rp.connection(readonly=k % 5 != 0) as conn:  # 1 write, 4 reads each
                    conn.execute("SELECT 1")

        assert run_threads(6, work) == []
        m.update()
        got = {(s.name, s.labels.get("route")): s.value
               for fam in text_string_to_metric_families(generate_latest(registry).decode())
               for s in fam.samples if s.labels.get("pool") == "routed"}  # fmt: skip
        assert got[("threadpool_db_routing_borrows_total", "primary")] == 6
        assert got[("threadpool_db_routing_borrows_total", "replica")] == 24
        assert got[("threadpool_db_routing_acquire_seconds_count", "primary")] == 6
        assert got[("threadpool_db_routing_acquire_seconds_count", "replica")] == 24
    finally:
        m.close()
        rp.close()
