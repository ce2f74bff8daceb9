"""Three shared-state guards: each test plays the interleaving that broke the guard, in order,
on a real pool (the threads' timing replaced by calling the steps in the racing order)."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pytest

from threadpool_db import ConnectionPool, PoolConfigError, PoolTimeout, workers
from threadpool_db.connector import Connector

from .helpers import wait_until
from .timing import JOIN, SETTLE, SHORT_TIMEOUT


def test_open_racing_close_leaves_no_thread_behind(pg, monkeypatch):
    """close() runs between open() deciding to start the threads and the threads existing:
    it told the threads it knew of (none) to end; the ones started after must end too (the
    creators used to wait for a task forever, the leak watchdog to run on)."""
    pool = ConnectionPool(pg.url, min_size=1, open=False, name="race-open")
    real_start = workers.start
    started: list[threading.Thread] = []

    def start_after_a_close(*args, **kwargs):
        closer = threading.Thread(target=pool.close)
        closer.start()
        closer.join(JOIN)
        assert not closer.is_alive()
        started.extend(real_start(*args, **kwargs))
        return started

    monkeypatch.setattr(workers, "start", start_after_a_close)
    pool.open()
    assert pool.closed and len(started) == pool.num_workers + 1  # the creators and the housekeeper
    watchdog = pool._leaks.thread
    for t in [*started, watchdog]:
        if t is not None:
            t.join(SETTLE)
    assert not [t.name for t in [*started, watchdog] if t is not None and t.is_alive()]


def test_a_ceiling_computed_before_a_resize_does_not_undo_it(pg):
    """The housekeeper computes the ceiling (max_size 4), resize(2) runs, then the housekeeper
    applies what it computed: the pool must stay within 2."""
    pool = ConnectionPool(pg.url, min_size=1, max_size=4, burst_size=8, burst_wait_threshold=60.0, name="ceiling")
    held = []
    try:
        pool.wait(SETTLE)
        stale = pool._housekeeper.ceiling()  # what the housekeeper read, before the resize
        assert stale == 4
        pool.resize(1, 2)
        pool._set_ceiling(stale)  # ... and applied after it
        held = [pool.getconn(timeout=SETTLE) for _ in range(2)]
        with pytest.raises(PoolTimeout):
            held.append(pool.getconn(timeout=SHORT_TIMEOUT))
        assert pool.stats()["size"] == 2
    finally:
        for c in held:
            pool.putconn(c)
        pool.close()


class _SucceedsRightAfterARead(Connector):
    """A connector whose next connect succeeds right after the pool reads its configuration
    error: the creator thread's success landing between two reads of the pool."""

    armed = False

    def __getattribute__(self, name: str):
        value = super().__getattribute__(name)
        if name in ("refusal", "config_error", "config_exc") and super().__getattribute__("armed"):
            self.armed = False
            self.succeeded()  # what a creator's successful connect does, without the pool lock
        return value


def test_a_configuration_error_cleared_mid_read_still_says_why(pg):
    """The pool decides "refused" from one read and makes the error from another: a success
    in between made it say the server refuses this pool's configuration: None."""
    u = urlsplit(pg.url)
    bad = f"postgresql://{u.username}:Not-The-Passw0rd@{u.hostname}:{u.port}/{u.path.lstrip('/')}"
    pool = ConnectionPool(bad, min_size=1, name="refusal", reconnect_timeout=60)
    try:
        wait_until(lambda: pool._connector.refusal is not None, what="the refusal known")
        pool._connector.__class__ = _SucceedsRightAfterARead
        pool._connector.armed = True
        with pytest.raises(PoolConfigError) as info:
            pool.getconn(timeout=SETTLE)
        text = str(info.value)
        assert "authentication failed" in text and "None" not in text, text
        assert info.value.__cause__ is not None
    finally:
        pool.close()
