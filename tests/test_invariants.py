"""Pool invariants under random operation sequences (hypothesis), over a fake driver.

The clock is injected: real monotonic time plus an offset that ``advance_time`` moves, so
waits still behave and lifetimes/idle limits can be jumped past. Every rule counts how often it
ran (and says so with hypothesis' ``event()``); the test fails when a rule ran fewer times than
its floor, so an invariant cannot pass just because its rule was never reached.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from threadpool_db import ConnectionPool, PoolError, PoolTimeout

from .fakes import Factory
from .helpers import run_threads, wait_until
from .timing import SETTLE

MIN, MAX = 1, 3
ACTIONS_PER_STEP = 10
COUNTS: Counter[str] = Counter()  # rule -> times run, over the whole test


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def _ran(name: str) -> None:
    COUNTS[name] += 1
    event(f"rule {name}")


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()  # injected: every part of the pool reads this one clock
        self.factory = Factory()
        self.pool = ConnectionPool(connect=self.factory, min_size=MIN, max_size=MAX, check="always", timeout=5.0,
                                   max_lifetime=100.0, max_idle=50.0, num_workers=1, clock=self.clock)  # fmt: skip
        self.pool.wait(SETTLE)
        self.out: list = []  # handles borrowed and not returned (held by "live" code)
        self.leaked: list = []  # handles their borrower forgot
        self.returned: list = []  # handles given back (for the double return)
        self.borrows = 0
        self.closed = False

    def teardown(self) -> None:
        try:
            s = self.pool.stats()
            COUNTS["evicted_expired"] += s["expired"]
            COUNTS["evicted_idle"] += s["idle_closed"]
        finally:
            self.pool.close()

    def _quiet(self) -> None:
        """Wait until the background creators have nothing in flight."""
        if not self.closed:
            wait_until(lambda: self.pool.stats()["growing"] == 0, timeout=SETTLE, what="creators idle")

    def _borrow(self) -> object | None:
        self._quiet()
        s = self.pool.stats()
        if s["idle"] == 0 and s["size"] >= MAX:
            with pytest.raises(PoolTimeout):
                self.pool.getconn(timeout=0.01)
            return None
        conn = self.pool.getconn(timeout=SETTLE)  # capacity exists: it must be granted
        self.borrows += 1
        return conn

    def _return(self, conn) -> None:
        self.pool.putconn(conn)  # into a closed pool too: closed quietly
        assert conn.returned
        self.returned.append(conn)

    # -- rules --------------------------------------------------------------------------------
    def borrow(self) -> None:
        _ran("borrow")
        conn = self._borrow()
        if conn is not None:
            self.out.append(conn)

    def borrow_use_return(self) -> None:
        """The common request: borrow, run a statement, give it back."""
        _ran("borrow_use_return")
        conn = self._borrow()
        if conn is not None:
            conn.execute("SELECT 1")
            self._return(conn)
            COUNTS["putconn"] += 1

    def give_back(self, i: int) -> None:
        _ran("give_back")
        self._return(self.out.pop(i % len(self.out)))
        COUNTS["putconn"] += 1

    def give_back_twice(self, i: int) -> None:
        _ran("give_back_twice")
        conn = self.returned[i % len(self.returned)]
        with pytest.raises(PoolError):
            self.pool.putconn(conn)

    def leak(self, i: int) -> None:
        _ran("leak")
        self.leaked.append(self.out.pop(i % len(self.out)))

    def kill_connection(self, i: int) -> None:
        _ran("kill_connection")
        self.out[i % len(self.out)].raw.close()  # the next return must discard it

    def kill_and_return(self, i: int) -> None:
        """A connection that broke in use comes back: it must be discarded, never idle."""
        _ran("kill_and_return")
        conn = self.out.pop(i % len(self.out))
        raw = conn.raw
        raw.close()
        self._return(conn)
        COUNTS["putconn"] += 1
        COUNTS["killed_returned"] += 1
        assert all(s.raw is not raw for s in list(self.pool._idle))

    def fail_next_connect(self) -> None:
        _ran("fail_next_connect")
        self.factory.fail_next += 1

    def advance_time(self, secs: float) -> None:
        _ran("advance_time")
        self.clock.offset += secs
        self.pool._housekeep()

    def close(self) -> None:
        _ran("close")
        self.pool.close()
        self.closed = True

    def fork_like_reset(self) -> None:
        # what os.fork() does to the pool in a child, minus the fork: old threads stopped first
        _ran("fork_like_reset")
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

    # Each action with its weight and precondition. hypothesis favours the simplest choices
    # (the first rules by name), so rules alone starved returns; one rule that draws the action
    # from a hypothesis-seeded Random gives real weights, and still replays and shrinks.
    ACTIONS = (
        ("borrow", 16, lambda m: not m.closed),
        ("borrow_use_return", 10, lambda m: not m.closed),
        ("give_back", 10, lambda m: bool(m.out)),
        ("give_back_twice", 3, lambda m: bool(m.returned)),
        ("leak", 4, lambda m: bool(m.out)),
        ("kill_connection", 5, lambda m: bool(m.out)),
        ("kill_and_return", 9, lambda m: bool(m.out) and not m.closed),
        ("fail_next_connect", 3, lambda m: m.factory.fail_next < 2),
        ("advance_time", 8, lambda m: True),
        ("close", 0.3, lambda m: not m.closed),  # rare: it ends what the rest can test
        ("fork_like_reset", 0.3, lambda m: not m.closed),
    )

    @rule(r=st.randoms(use_true_random=True))  # seeded by hypothesis: replayable, truly weighted
    def act(self, r) -> None:
        """A burst of weighted actions (hypothesis ends stateful runs after a few steps), with
        both invariants checked after each one."""
        for _ in range(ACTIONS_PER_STEP):
            enabled = [(name, w) for name, w, ok in self.ACTIONS if ok(self)]
            name = r.choices([n for n, _ in enabled], weights=[w for _, w in enabled])[0]
            method = getattr(self, name)
            if name in ("give_back", "give_back_twice", "leak", "kill_connection", "kill_and_return"):
                method(r.randrange(1 << 16))
            elif name == "advance_time":
                method(r.choice([1.0, 60.0, 120.0]))
            else:
                method()
            self.counts_add_up()
            self.nothing_is_out_twice()

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def counts_add_up(self) -> None:
        s = self.pool.stats()
        assert s["in_use"] + s["idle"] == s["size"] <= MAX
        assert s["borrows"] == self.borrows
        assert s["created"] - s["closed"] == s["size"]  # every connection that left was counted once
        if self.closed:
            assert s["idle"] == 0
        else:
            assert s["in_use"] == len(self.out) + len(self.leaked)

    @invariant()
    def nothing_is_out_twice(self) -> None:
        live = [c for c in self.out + self.leaked if not c.returned]
        raws = [id(c.raw) for c in live]
        assert len(raws) == len(set(raws))
        idle = {id(s.raw) for s in list(self.pool._idle)}
        assert not idle & set(raws)
        assert all(not s.raw.closed for s in list(self.pool._idle))  # a broken one never idles


# Floors: each rule, and each path an invariant guards, must actually have been exercised.
FLOORS = {
    "borrow": 50, "borrow_use_return": 50, "give_back": 50, "give_back_twice": 20, "leak": 20,
    "kill_connection": 20, "kill_and_return": 30, "fail_next_connect": 20, "advance_time": 50,
    "close": 3, "fork_like_reset": 3, "putconn": 200, "killed_returned": 30,
    "evicted_expired": 5, "evicted_idle": 1,
}  # fmt: skip


def test_pool_state_machine_keeps_its_invariants_and_reaches_every_rule():
    COUNTS.clear()
    run_state_machine_as_test(
        PoolMachine,
        settings=settings(
            max_examples=12, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        ),
    )
    short = {k: (COUNTS[k], floor) for k, floor in FLOORS.items() if COUNTS[k] < floor}
    assert not short, f"rules or paths exercised fewer times than their floor (ran, floor): {short}"


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


def test_a_borrow_is_recorded_alike_on_the_fast_path_and_after_a_wait():
    """getconn's fast path finishes a borrow inline; a waiter's borrow is finished by
    ``_finish_borrow_locked``. Both must leave the same record: the borrower's thread and line
    in ``borrowed()`` (and so in leak reports), a live handle of this pool, one borrow counted."""
    pool = ConnectionPool(connect=Factory(), min_size=1, max_size=1, check="never", open=True, name="alike")
    records: dict[str, dict[str, object]] = {}
    handles: dict[str, object] = {}

    def borrow(how: str) -> None:
        handles[how] = pool.getconn(timeout=SETTLE)  # the line both records must name
        (records[how],) = [r for r in pool.borrowed() if r["thread_name"] == threading.current_thread().name]

    try:
        pool.wait(SETTLE)
        borrow("fast")  # an idle connection, nobody queued: the fast path
        t = threading.Thread(target=borrow, args=("waited",), name="waiter", daemon=True)
        t.start()
        wait_until(lambda: pool.stats()["waiting"] == 1, what="the waiter queued")
        pool.putconn(handles["fast"])  # type: ignore[arg-type]
        t.join(SETTLE)
        assert not t.is_alive()
        fast, waited = records["fast"], records["waited"]
        assert fast["borrow_site"] == waited["borrow_site"] and "test_invariants.py" in str(fast["borrow_site"])
        assert (fast["thread_name"], waited["thread_name"]) == (threading.current_thread().name, "waiter")
        assert fast["thread_ident"] == threading.get_ident() and waited["thread_ident"] == t.ident
        assert fast["connection_id"] == waited["connection_id"]
        assert handles["waited"] in pool and handles["fast"] not in pool
        assert pool.stats()["borrows"] == 2
        pool.putconn(handles["waited"])  # type: ignore[arg-type]
    finally:
        pool.close()
