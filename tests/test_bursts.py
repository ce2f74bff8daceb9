"""Bursts: under sustained waits the pool grows past max_size up to burst_size, and decays back
to max_size when demand is gone (the decision is the housekeeper's, threadpool_db/housekeeper.py)."""

from __future__ import annotations

import itertools
import threading
import time

from .helpers import run_threads
from .timing import JOIN, SETTLE


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
