"""Identity by object, never by number: a thread's ident and an object's id() are reused once
their owner is gone. Each test here makes the reuse happen on purpose, then checks that the
pool's leak reports and the metrics' registries still tell the new owner from the old one."""

from __future__ import annotations

import gc
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from threadpool_db import ConnectionPool, PoolTimeout
from threadpool_db.metrics import PoolMetrics

from .helpers import wait_until
from .timing import JOIN, SETTLE

REUSE_TRIES = 200  # threads started until one gets the ident of a thread that ended


def _borrow_and_end(pool: ConnectionPool) -> threading.Thread:
    """A thread that borrows a connection and ends holding it; joined."""
    t = threading.Thread(target=pool.getconn, name="ended-holding", daemon=True)
    t.start()
    t.join(JOIN)
    assert not t.is_alive()
    return t


def _thread_with_ident(ident: int, release: threading.Event, work=None) -> threading.Thread:
    """Start threads until one gets ``ident`` (the OS hands a freed thread's back soon: glibc
    reuses its stack, and the ident is its address). That one runs ``work`` and then stays
    alive until ``release``; the others end at once."""
    for i in range(REUSE_TRIES):
        got = threading.Event()
        keep: list[bool] = []

        def run(got: threading.Event = got, keep: list[bool] = keep) -> None:
            if threading.get_ident() == ident:
                keep.append(True)
                if work is not None:
                    work()
                got.set()
                release.wait(JOIN)
            else:
                got.set()

        t = threading.Thread(target=run, name=f"newcomer-{i}", daemon=True)
        t.start()
        assert got.wait(JOIN)
        if keep:
            return t
        t.join(JOIN)
    raise AssertionError(f"no new thread got ident {ident} in {REUSE_TRIES} tries")


def test_a_leak_report_names_the_thread_that_ended_not_the_one_that_got_its_ident(make_pool):
    pool = make_pool(min_size=2, max_size=2, leak_threshold=1.0, capture_stacks="full", name="reuse")
    ended = _borrow_and_end(pool)
    release = threading.Event()
    newcomer = _thread_with_ident(ended.ident, release)  # type: ignore[arg-type]
    try:
        assert newcomer.ident == ended.ident and newcomer.is_alive()
        (rec,) = pool.borrowed()
        assert rec["thread_name"] == "ended-holding"
        (leased,) = pool._leased()
        raw = leased.raw  # the dead borrower's connection: nobody can be inside it
        assert rec["thread_alive"] is False and rec["state"] == "thread ended"
        assert "newcomer" not in rec["holder_stack"]
        mine = pool.getconn()  # the other one: a timeout now names both holders
        with pytest.raises(PoolTimeout) as ei:
            pool.getconn(timeout=0.1)
        pool.putconn(mine)
        assert "thread 'ended-holding'" in str(ei.value) and "newcomer" not in str(ei.value)
        # the watchdog: reported as a dead borrower's, so taken back at once
        wait_until(lambda: pool.stats()["leaks_reclaimed"] == 1, timeout=1.0 + SETTLE, what="the reclaim")
        s = pool.stats()
        assert s["borrower_thread_died"] == 1 and s["leaks_detected"] == 1
        # closed for real, not only aborted as under a live borrower (the newcomer with its ident)
        assert raw.closed
        (report,) = pool.leak_reports()
        assert report["thread_name"] == "ended-holding" and report["thread_alive"] is False
        assert "newcomer" not in report["summary"] + report["holder_stack"]
    finally:
        release.set()
        newcomer.join(JOIN)
    assert not newcomer.is_alive()


def test_a_thread_with_a_dead_borrowers_ident_is_not_told_it_nests(make_pool):
    """The newcomer takes the last idle connection while the ended thread's one is out under
    the same ident: not a nested borrow of the newcomer's."""
    pool = make_pool(min_size=2, max_size=2, leak_threshold=30.0, capture_stacks="full", name="reuse-nest")
    ended = _borrow_and_end(pool)
    release = threading.Event()
    held: list = []

    def borrow_the_last() -> None:
        held.append(pool.getconn())

    newcomer = _thread_with_ident(ended.ident, release, borrow_the_last)  # type: ignore[arg-type]
    try:
        assert len(held) == 1 and pool.stats()["idle"] == 0
        assert pool.stats()["nested_borrows"] == 0
        names = sorted(r["thread_name"] for r in pool.borrowed())
        assert names == ["ended-holding", newcomer.name]
    finally:
        release.set()
        newcomer.join(JOIN)
    assert not newcomer.is_alive()


def test_a_registry_at_a_dropped_ones_address_gets_metrics_of_its_own(make_pool):
    pool = make_pool(min_size=1, max_size=4, leak_threshold=None, name="reg-reuse")
    seen: set[int] = set()
    reused = 0
    for _ in range(100):
        registry = CollectorRegistry()
        if id(registry) in seen:
            reused += 1
        seen.add(id(registry))
        exporter = PoolMetrics(pool, registry=registry, interval=60.0)
        try:
            text = generate_latest(registry).decode()
            assert 'threadpool_db_connections_max{pool="reg-reuse"} 4.0' in text, (reused, text[:300])
        finally:
            exporter.close()
        del registry, exporter, text
        gc.collect()
        if reused >= 5:
            break
    assert reused >= 1, "no registry came up at a dropped one's address: the test proved nothing"
