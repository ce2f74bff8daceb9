"""Pool invariants under random operation sequences (hypothesis), over a fake driver.

The clock is injected: real monotonic time plus an offset that ``advance_time`` moves, so
waits still behave and lifetimes/idle limits can be jumped past.
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import threadpool_db.pool as pool_mod
from threadpool_db import ConnectionPool, PoolClosed, PoolError, PoolTimeout

from .fakes import Factory
from .helpers import run_threads, wait_until
from .timing import SETTLE

MIN, MAX = 1, 3


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._saved = pool_mod.monotonic
        pool_mod.monotonic = self.clock
        self.factory = Factory()
        self.pool = ConnectionPool(connect=self.factory, min_size=MIN, max_size=MAX, check="always", timeout=5.0,
                                   max_lifetime=100.0, max_idle=50.0, num_workers=1)  # fmt: skip
        self.pool.wait(SETTLE)
        self.out: list = []  # handles borrowed and not returned (held by "live" code)
        self.leaked: list = []  # handles their borrower forgot
        self.returned: list = []  # handles given back (for the double return)
        self.borrows = 0
        self.closed = False

    def teardown(self) -> None:
        try:
            self.pool.close()
        finally:
            pool_mod.monotonic = self._saved

    def _quiet(self) -> None:
        """Wait until the background creators have nothing in flight."""
        if not self.closed:
            wait_until(lambda: self.pool.stats()["growing"] == 0, timeout=SETTLE, what="creators idle")

    # -- rules --------------------------------------------------------------------------------
    @precondition(lambda self: not self.closed)
    @rule()
    def borrow(self) -> None:
        self._quiet()
        s = self.pool.stats()
        if s["idle"] == 0 and s["size"] >= MAX:
            with pytest.raises(PoolTimeout):
                self.pool.getconn(timeout=0.01)
            return
        conn = self.pool.getconn(timeout=SETTLE)  # capacity exists: it must be granted
        self.borrows += 1
        self.out.append(conn)

    @precondition(lambda self: self.out)
    @rule(i=st.integers(min_value=0))
    def give_back(self, i: int) -> None:
        conn = self.out.pop(i % len(self.out))
        if self.closed:
            with pytest.raises(PoolClosed):
                self.pool.putconn(conn)
        else:
            self.pool.putconn(conn)
        assert conn.returned
        self.returned.append(conn)

    @precondition(lambda self: self.returned)
    @rule(i=st.integers(min_value=0))
    def give_back_twice(self, i: int) -> None:
        conn = self.returned[i % len(self.returned)]
        with pytest.raises(PoolError):
            self.pool.putconn(conn)

    @precondition(lambda self: self.out)
    @rule(i=st.integers(min_value=0))
    def leak(self, i: int) -> None:
        self.leaked.append(self.out.pop(i % len(self.out)))

    @precondition(lambda self: self.out)
    @rule(i=st.integers(min_value=0))
    def kill_connection(self, i: int) -> None:
        self.out[i % len(self.out)].raw.close()  # the next return must discard it

    @precondition(lambda self: self.factory.fail_next < 2)
    @rule()
    def fail_next_connect(self) -> None:
        self.factory.fail_next += 1

    @rule(secs=st.sampled_from([1.0, 60.0, 120.0]))
    def advance_time(self, secs: float) -> None:
        self.clock.offset += secs
        self.pool._housekeep()

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.pool.close()
        self.closed = True

    @precondition(lambda self: not self.closed)
    @rule()
    def fork_like_reset(self) -> None:
        # what os.fork() does to the pool in a child, minus the fork: old threads stopped first
        self.pool._stop.set()
        self.pool._tasks.shutdown(len(self.pool._threads))
        for t in self.pool._threads:
            t.join(SETTLE)
        self.pool._after_fork_child()
        for conn in self.out + self.leaked:
            with pytest.raises(PoolError, match=r"before os\.fork"):
                conn.execute("SELECT 1")
        self.out, self.leaked, self.returned = [], [], []
        self.borrows = 0

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def counts_add_up(self) -> None:
        s = self.pool.stats()
        assert s["in_use"] + s["idle"] == s["size"] <= MAX
        assert s["borrows"] == self.borrows
        if self.closed:
            assert s["idle"] == 0
        else:
            assert s["in_use"] == len(self.out) + len(self.leaked)

    @invariant()
    def nothing_is_out_twice(self) -> None:
        live = [c for c in self.out + self.leaked if not c.returned]
        raws = [id(c.raw) for c in live]
        assert len(raws) == len(set(raws))
        idle = {id(s.raw) for s in list(self.pool._pool)}
        assert not idle & set(raws)
        assert all(not s.raw.closed for s in list(self.pool._pool))


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def test_every_waiter_is_served_in_fifo_order_for_random_arrivals():
    from hypothesis import given

    @settings(max_examples=15, deadline=None)
    @given(n=st.integers(min_value=2, max_value=8), size=st.integers(min_value=1, max_value=3))
    def check(n: int, size: int) -> None:
        pool = ConnectionPool(connect=Factory(), min_size=size, max_size=size, check="never")
        try:
            pool.wait(SETTLE)
            held = [pool.getconn() for _ in range(size)]
            order: list[int] = []
            got: dict[int, object] = {}
            release = [threading.Event() for _ in range(n)]

            def waiter(i: int) -> None:
                got[i] = pool.getconn(timeout=SETTLE)
                order.append(i)
                release[i].wait(SETTLE)
                pool.putconn(got[i])  # type: ignore[arg-type]

            threads = []
            for i in range(n):
                t = threading.Thread(target=waiter, args=(i,), daemon=True)
                t.start()
                threads.append(t)
                wait_until(lambda i=i: pool.stats()["waiting"] == i + 1, what="queued")
            # free exactly one connection at a time: it must go to the oldest waiter
            for k in range(n):
                if held:
                    pool.putconn(held.pop())
                else:
                    release[order[k - size]].set()
                wait_until(lambda k=k: len(order) == k + 1, what=f"grant {k}")
            for e in release:
                e.set()
            for t in threads:
                t.join(SETTLE)
            assert not any(t.is_alive() for t in threads)
            assert order == list(range(n))
        finally:
            pool.close()

    check()


def test_many_threads_over_a_failing_factory_never_share_a_connection():
    factory = Factory()
    pool = ConnectionPool(connect=factory, min_size=2, max_size=4, check="never", timeout=SETTLE)
    owners: dict[int, int] = {}
    clash: list[int] = []
    lock = threading.Lock()
    try:
        pool.wait(SETTLE)

        def worker(i: int) -> None:
            for k in range(200):
                if k % 50 == 0:
                    factory.fail_next = 1
                c = pool.getconn()
                key = id(c.raw)
                with lock:
                    if key in owners:
                        clash.append(key)
                    owners[key] = i
                if k % 37 == 0:
                    c.raw.close()  # broken: must be discarded, never reused
                with lock:
                    owners.pop(key, None)
                pool.putconn(c)

        assert run_threads(32, worker) == []
        assert clash == []
        s = pool.stats()
        assert s["in_use"] == 0 and s["size"] <= 4 and s["discarded_broken"] > 0
    finally:
        pool.close()
