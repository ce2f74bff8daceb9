"""Fork safety with a real os.fork(), the way gunicorn forks its workers."""

from __future__ import annotations

import logging
import threading
import time

from .helpers import backends, in_child, run_threads, sql, wait_until
from .timing import JOIN, SETTLE


def test_child_gets_its_own_connections_and_parent_keeps_working(make_pool, dsn):
    pool = make_pool(min_size=2, max_size=2)
    held = pool.getconn()  # borrowed in the parent across the fork
    parent_pids = sorted([held.info.backend_pid] + [s.pid for s in pool._all.values() if s.handle is None])

    def child() -> dict:
        out: dict = {}
        try:
            held.execute("SELECT 1")
        except Exception as e:
            out["held_error"] = type(e).__name__ + ": " + str(e)
        pool.wait(SETTLE)
        with pool.connection(timeout=SETTLE) as conn:
            out["pid"] = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        out["stats"] = {k: pool.stats()[k] for k in ("size", "in_use", "idle")}
        return out

    out = in_child(child)  # leaves with os._exit: no atexit, no finalizer of the parent's
    assert out["pid"] not in parent_pids
    assert "before os.fork()" in out["held_error"]
    assert out["stats"]["size"] == 2 and out["stats"]["in_use"] == 0
    # the child did not close the parent's sockets: the connection held across the fork works
    held_pid = held.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert held_pid in parent_pids
    # the parent closed its idle connection at the fork (a pre-fork master must not keep
    # backends its workers inherit): its backend is gone; the borrowed one came back fine
    idle_pid = next(p for p in parent_pids if p != held_pid)
    wait_until(
        lambda: not sql(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (idle_pid,)),
        what="the parent's idle backend to exit",
    )
    pool.putconn(held)
    conns = [pool.getconn(timeout=SETTLE) for _ in range(2)]
    seen = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns}
    for c in conns:
        pool.putconn(c)
    assert held_pid in seen and idle_pid not in seen
    assert pool.stats()["discarded_broken"] == 0


def test_parent_closes_idle_connections_at_fork_and_stops_refilling(make_pool, dsn, app_name, caplog):
    """gunicorn --preload with a factory that touches the database: the master must not keep
    an idle backend that every worker inherits by descriptor."""
    pool = make_pool(min_size=2, max_size=4)
    assert len(backends(dsn, app_name)) == 2
    with caplog.at_level(logging.INFO, logger="threadpool_db"):
        assert in_child(lambda: True) is True
    wait_until(lambda: not backends(dsn, app_name), what="the parent's idle backends to close")
    assert any("after os.fork()" in r.getMessage() and "on demand" in r.getMessage() for r in caplog.records)
    for _ in range(3):  # housekeeping rounds pass (run here: a quiet pool's thread sleeps till its deadline)
        pool._housekeep()  # ...and must not refill to min_size here
    assert pool.stats()["size"] == 0 and not backends(dsn, app_name)
    with pool.connection(timeout=SETTLE) as conn:  # on demand still works
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_forks_in_the_middle_of_borrows_leave_children_a_working_pool(make_pool):
    pool = make_pool(min_size=2, max_size=4)
    stop = threading.Event()

    def churn(i: int) -> None:
        while not stop.is_set():
            with pool.connection(timeout=JOIN) as conn:
                conn.execute("SELECT 1")

    workers = threading.Thread(target=lambda: run_threads(4, churn), daemon=True)
    workers.start()
    try:

        def child() -> dict:
            with pool.connection(timeout=SETTLE) as conn:
                return {"v": conn.execute("SELECT 1").fetchone()[0], "in_use": pool.stats()["in_use"]}

        for _ in range(5):
            time.sleep(0.05)
            assert in_child(child) == {"v": 1, "in_use": 1}
    finally:
        stop.set()
        workers.join(JOIN)
    assert not workers.is_alive()
