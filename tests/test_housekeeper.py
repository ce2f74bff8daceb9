"""The housekeeper (threadpool_db/housekeeper.py): idle connections past max_lifetime retire and
are replaced up to min_size, a borrowed one only when it comes back; max_idle shrinks the pool
to min_size and never closes a connection under its borrower. Bursts: tests/test_bursts.py."""

from __future__ import annotations

import threading
import time

from .helpers import run_threads, wait_until
from .timing import JOIN, SETTLE


def test_max_lifetime_recycles_idle_connections_only(make_pool):
    pool = make_pool(min_size=2, max_size=2, max_lifetime=0.5)
    filled = time.monotonic()  # both connections exist: both expire by filled + max_lifetime
    held = pool.getconn()
    pid = held.info.backend_pid
    # The idle twin expiring proves the housekeeper ran past its lifetime; once the held one's
    # has passed too, it must still be untouched while in use.
    wait_until(lambda: pool.stats()["expired"] >= 1 and time.monotonic() > filled + 0.5,
               what="the idle connection to expire and both lifetimes to pass")  # fmt: skip
    assert held.execute("SELECT pg_backend_pid()").fetchone() == (pid,)
    pool.putconn(held)  # expired: closed on return, and replaced
    with pool.connection(timeout=SETTLE) as conn:
        assert conn.info.backend_pid != pid
    assert pool.stats()["expired"] >= 2


def test_housekeeper_retires_expired_idle_connections(make_pool):
    pool = make_pool(min_size=2, max_size=2, max_lifetime=0.5)
    first = pool.stats()["created"]
    wait_until(lambda: pool.stats()["expired"] >= 2, what="two expired")
    wait_until(lambda: pool.stats()["size"] == 2, what="refill to min_size")
    assert pool.stats()["created"] >= first + 2


def test_max_idle_shrinks_to_min_size(make_pool):
    pool = make_pool(min_size=1, max_size=4, max_idle=0.3)
    barrier = threading.Barrier(4)

    def worker(i: int) -> None:
        with pool.connection(timeout=JOIN):
            barrier.wait(JOIN)

    assert run_threads(4, worker) == []
    assert pool.stats()["size"] == 4
    wait_until(lambda: pool.stats()["size"] == 1, what="shrink to min_size")
    assert pool.stats()["idle_closed"] == 3


def test_max_idle_closes_the_idle_connections_not_the_one_in_use(make_pool):
    """Which ones go: those idle past max_idle, never the one a borrower keeps using."""
    pool = make_pool(min_size=3, max_size=3, max_idle=0.3)
    time.sleep(0.5)  # all three idle past max_idle; min_size keeps them for now
    used: set[int] = set()
    with pool.connection(timeout=JOIN) as conn:
        used.add(conn.info.backend_pid)
    pool.resize(1, 3)  # now two of them may go
    # Keep using one (the idle deque is LIFO: the same one comes back while it survives).
    deadline = time.monotonic() + SETTLE
    while pool.stats()["size"] > 1 and time.monotonic() < deadline:
        with pool.connection(timeout=JOIN) as conn:
            used.add(conn.info.backend_pid)
        time.sleep(0.05)
    assert pool.stats()["size"] == 1, "the pool did not shrink to min_size"
    assert len(used) == 1, f"the connection in use was closed under its borrower: it went through backends {used}"
    assert pool.backend_pids() == sorted(used)
    assert pool.stats()["idle_closed"] == 2
