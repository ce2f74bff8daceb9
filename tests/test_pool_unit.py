"""Pool logic over a fake driver: handoff races, counting, close. No database involved. (The
driver seam and its fakes: tests/test_connector.py.)"""

from __future__ import annotations

import random
import threading

import pytest

from threadpool_db import ConnectionPool, PoolError, PoolTimeout

from .fakes import Factory
from .helpers import run_threads
from .timing import SETTLE


def test_timeouts_racing_returns_never_lose_a_connection():
    factory = Factory()
    pool = ConnectionPool(connect=factory, min_size=3, max_size=3, check="never")
    try:
        pool.wait(SETTLE)
        got = timeouts = 0
        lock = threading.Lock()

        def worker(i: int) -> None:
            nonlocal got, timeouts
            rnd = random.Random(i)
            for _ in range(300):
                try:
                    conn = pool.getconn(timeout=rnd.choice([0.0, 0.0001, 0.001]))
                except PoolTimeout:
                    with lock:
                        timeouts += 1
                    continue
                with lock:
                    got += 1
                pool.putconn(conn)

        assert run_threads(16, worker) == []
        s = pool.stats()
        assert s["size"] == 3 and s["idle"] == 3 and s["in_use"] == 0 and s["waiting"] == 0
        assert s["borrows"] == got and s["timeouts"] == timeouts
        assert got + timeouts == 16 * 300
        assert len(factory.made) == 3  # nothing was lost, so nothing needed replacing
    finally:
        pool.close()


def test_double_putconn_from_two_threads_returns_once():
    factory = Factory()
    pool = ConnectionPool(connect=factory, min_size=2, max_size=2, check="never")
    try:
        pool.wait(SETTLE)
        for _ in range(200):
            c = pool.getconn()
            barrier = threading.Barrier(2)
            errs = []

            def put(i: int, c=c, barrier=barrier, errs=errs) -> None:
                barrier.wait(SETTLE)
                try:
                    pool.putconn(c)
                except PoolError as e:
                    errs.append(e)

            assert run_threads(2, put) == []
            assert len(errs) == 1
            s = pool.stats()
            assert s["idle"] == 2 and s["in_use"] == 0
    finally:
        pool.close()


def test_nothing_is_handed_out_after_close():
    pool = ConnectionPool(connect=Factory(), min_size=1, check="never")
    pool.wait(SETTLE)
    pool.close()
    with pytest.raises(PoolError):
        pool.getconn()
