"""resize() at runtime: growing lets waiters through, shrinking closes the idle surplus now and
the borrowed surplus on return, and the size rule is checked. psycopg_pool's reading of resize(min_size, max_size):
tests/test_dropin.py::test_resize_has_psycopg_pool_meaning."""

from __future__ import annotations

import pytest

from .helpers import times_out
from .timing import SETTLE


def test_resize_at_runtime(make_pool):
    pool = make_pool(min_size=1, max_size=2)
    conns = [pool.getconn() for _ in range(2)]
    with times_out(0.2):
        pool.getconn(timeout=0.2)
    pool.resize(1, 4)  # psycopg_pool's signature: resize(min_size, max_size=None)
    more = [pool.getconn(timeout=SETTLE) for _ in range(2)]
    for c in more:
        pool.putconn(c)
    assert pool.stats()["size"] == 4
    pool.resize(min_size=1, max_size=1)  # idle surplus closes now, borrowed surplus on return
    assert pool.stats()["size"] == 2
    for c in conns:
        pool.putconn(c)
    assert pool.stats()["size"] == 1 and pool.max_size == 1
    with pytest.raises(ValueError, match="max_size"):
        pool.resize(min_size=3, max_size=2)
