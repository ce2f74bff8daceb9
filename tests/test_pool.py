"""The core pool against a real PostgreSQL: fairness, exclusivity, bounds, reset, eviction,
lifetimes, close."""

from __future__ import annotations

import gc
import itertools
import socket
import threading
import time

import psycopg
import pytest

from threadpool_db import ConnectionPool, PoolClosed, PoolError, PoolTimeout, TooManyWaiters, config
from threadpool_db.connector import Connector
from threadpool_db.drivers import IDLE, INTRANS

from .helpers import backends, connect, run_threads, sql, times_out, wait_until
from .timing import JOIN, POLL, SETTLE, SHORT_TIMEOUT


def test_borrow_runs_a_query_and_commits_on_clean_exit(make_pool, dsn):
    pool = make_pool(min_size=1)
    sql(dsn, "CREATE TABLE IF NOT EXISTS t_commit (v int)")
    sql(dsn, "TRUNCATE t_commit")
    with pool.connection() as conn:
        conn.execute("INSERT INTO t_commit VALUES (1)")
    assert sql(dsn, "SELECT count(*) FROM t_commit") == [(1,)]


def test_exception_in_with_rolls_back_and_returns_the_connection(make_pool, dsn):
    pool = make_pool(min_size=1)
    sql(dsn, "CREATE TABLE IF NOT EXISTS t_rb (v int)")
    sql(dsn, "TRUNCATE t_rb")
    with pytest.raises(ZeroDivisionError):
        with pool.connection() as conn:
            conn.execute("INSERT INTO t_rb VALUES (1)")
            1 / 0  # noqa: B018
    assert sql(dsn, "SELECT count(*) FROM t_rb") == [(0,)]
    s = pool.stats()
    assert s["in_use"] == 0 and s["idle"] == 1


def test_waiters_are_served_in_arrival_order(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    held = pool.getconn()
    order: list[int] = []
    threads = []

    def borrower(i: int) -> None:
        with pool.connection(timeout=JOIN) as conn:
            order.append(i)
            conn.execute("SELECT 1")

    for i in range(8):
        t = threading.Thread(target=borrower, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        # queue them one at a time so arrival order is known
        wait_until(lambda n=i + 1: pool.stats()["waiting"] == n, what=f"{i + 1} waiters")
    pool.putconn(held)
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads)
    assert order == list(range(8))


def test_no_connection_is_ever_held_by_two_threads(make_pool):
    pool = make_pool(min_size=4, max_size=4)
    owner: dict[int, int] = {}
    clash: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        me = threading.get_ident()
        for _ in range(25):
            with pool.connection(timeout=JOIN) as conn:
                pid = conn.info.backend_pid
                with lock:
                    if owner.get(pid) is not None:
                        clash.append(f"backend {pid} held by {owner[pid]} and {me}")
                    owner[pid] = me
                conn.execute("SELECT pg_backend_pid()").fetchone()
                # Hold until someone queues behind us (or briefly, near the end), so every
                # round hands a connection from one thread to another under contention.
                deadline = time.monotonic() + 0.2
                while not pool.get_stats()["requests_waiting"] and time.monotonic() < deadline:
                    time.sleep(POLL)
                with lock:
                    if owner.get(pid) != me:
                        clash.append(f"backend {pid} taken from {me}")
                    owner[pid] = None  # type: ignore[assignment]

    errors = run_threads(64, worker)
    assert errors == []
    assert clash == []
    s = pool.stats()
    assert s["borrows"] >= 64 * 25
    assert s["size"] == 4 and s["in_use"] == 0


def test_server_never_sees_more_than_max_size(make_pool, pg, app_name):
    pool = make_pool(min_size=1, max_size=3)
    peak = 0
    stop = threading.Event()

    def sampler() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(backends(pg.admin_url, app_name)))
            time.sleep(0.005)

    s = threading.Thread(target=sampler, daemon=True)
    s.start()

    def worker(i: int) -> None:
        for _ in range(10):
            with pool.connection(timeout=JOIN) as conn:
                conn.execute("SELECT pg_sleep(0.002)")

    try:
        assert run_threads(32, worker) == []
    finally:
        stop.set()
        s.join(JOIN)
    assert 1 <= peak <= 3
    assert pool.stats()["size"] == 3


def test_borrow_times_out_with_a_message_naming_the_pool(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="tiny")
    held = pool.getconn()
    with times_out(SHORT_TIMEOUT) as ei:
        pool.getconn(timeout=SHORT_TIMEOUT)
    msg = str(ei.value)
    for part in ("'tiny'", "size=1", "in_use=1", "idle=0", "waiting=0"):
        assert part in msg
    assert pool.stats()["timeouts"] == 1
    pool.putconn(held)
    with pool.connection(timeout=SHORT_TIMEOUT) as conn:  # the timed-out waiter lost nothing
        conn.execute("SELECT 1")


def test_a_wait_after_a_failed_validation_keeps_the_first_deadline(make_pool):
    """A waiter served a connection that fails validation waits again, within what is left of
    its timeout, never a fresh one: the holder returns at 0.8 T, the check fails, no new
    connection can arrive in time, and the borrow must fail at about T, not 1.8 T."""
    T = 1.0
    fail_next = threading.Event()  # the next check fails (once)
    slow_connects = threading.Event()  # new connections take longer than the borrow may wait
    release = threading.Event()  # lets a slow connect finish (at the end of the test)

    def check(conn):
        if fail_next.is_set():
            fail_next.clear()
            raise RuntimeError("planted check failure")

    def configure(conn):
        if slow_connects.is_set():
            release.wait(5 * T)

    pool = make_pool(min_size=1, max_size=1, check=check, configure=configure, name="second-wait")
    holder = pool.getconn()

    def give_back_late() -> None:
        time.sleep(0.8 * T)
        fail_next.set()
        slow_connects.set()
        pool.putconn(holder)

    t = threading.Thread(target=give_back_late, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=T)
        elapsed = time.monotonic() - t0
    finally:
        release.set()
        t.join(JOIN)
    assert not t.is_alive()
    assert pool.stats()["check_failed"] == 1  # the scenario happened: a grant failed its check
    assert 0.9 * T <= elapsed < 1.25 * T, f"the borrow gave up after {elapsed:.2f} s with timeout={T} s"


def test_max_waiting_rejects_at_once(make_pool):
    pool = make_pool(min_size=1, max_size=1, max_waiting=1)
    held = pool.getconn()
    waiter = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=JOIN)), daemon=True)
    waiter.start()
    wait_until(lambda: pool.stats()["waiting"] == 1, what="one waiter")
    t0 = time.monotonic()
    with pytest.raises(TooManyWaiters):
        pool.getconn(timeout=JOIN)
    assert time.monotonic() - t0 < 1.0
    pool.putconn(held)
    waiter.join(JOIN)
    assert not waiter.is_alive()
    assert pool.stats()["rejected"] == 1


def test_uncommitted_work_and_settings_do_not_leak_to_the_next_borrower(make_pool, dsn):
    pool = make_pool(min_size=1, max_size=1)
    sql(dsn, "CREATE TABLE IF NOT EXISTS t_iso (v int)")
    sql(dsn, "TRUNCATE t_iso")
    c1 = pool.getconn()
    pid = c1.info.backend_pid
    c1.execute("INSERT INTO t_iso VALUES (42)")
    c1.execute("SET LOCAL statement_timeout = '1s'")
    pool.putconn(c1)  # no commit: the pool must roll back
    c2 = pool.getconn()
    assert c2.info.backend_pid == pid  # same connection, so the test means something
    assert c2.execute("SELECT count(*) FROM t_iso").fetchone() == (0,)
    c2.rollback()
    c2.autocommit = True
    c2.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    c2.read_only = True
    pool.putconn(c2)
    c3 = pool.getconn()
    assert c3.info.backend_pid == pid
    assert c3.autocommit is False
    assert c3.isolation_level is None
    assert c3.read_only is None
    # the same settings changed through psycopg's methods rather than the properties
    c3.set_autocommit(True)
    c3.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    c3.set_read_only(True)
    c3.set_deferrable(True)
    pool.putconn(c3)
    c4 = pool.getconn()
    assert c4.info.backend_pid == pid
    assert (c4.autocommit, c4.isolation_level, c4.read_only, c4.deferrable) == (False, None, None, None)
    assert c4.execute("SHOW transaction_read_only").fetchone() == ("off",)
    c4.rollback()
    pool.putconn(c4)


def test_a_failed_transaction_is_rolled_back_on_return(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    conn = pool.getconn()
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1/0")
    pool.putconn(conn)  # INERROR now
    with pool.connection() as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_killed_backend_is_discarded_and_replaced(make_pool, pg):
    pool = make_pool(min_size=1, max_size=1, check="never")
    with pool.connection() as conn:
        pid = conn.info.backend_pid
    sql(pg.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    with pool.connection(timeout=SETTLE) as conn:
        assert conn.info.backend_pid != pid
        conn.execute("SELECT 1")
    assert pool.stats()["discarded_broken"] >= 1


def test_validation_catches_a_killed_idle_connection(make_pool, pg):
    pool = make_pool(min_size=1, max_size=1, check="always")
    with pool.connection() as conn:
        pid = conn.info.backend_pid
    sql(pg.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: pid not in [r[0] for r in sql(pg.admin_url, "SELECT pid FROM pg_stat_activity")])
    with pool.connection(timeout=SETTLE) as conn:  # the user's query never sees the dead one
        assert conn.info.backend_pid != pid
        conn.execute("SELECT 1")
    assert pool.stats()["check_failed"] == 1


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


def test_pool_grows_on_demand_up_to_max_size(make_pool):
    pool = make_pool(min_size=0, max_size=3)
    assert pool.stats()["size"] == 0
    conns = [pool.getconn(timeout=SETTLE) for _ in range(3)]
    assert len({c.info.backend_pid for c in conns}) == 3
    with times_out(SHORT_TIMEOUT):
        pool.getconn(timeout=SHORT_TIMEOUT)
    for c in conns:
        pool.putconn(c)
    assert pool.stats()["size"] == 3


def test_close_with_connections_out(make_pool, pg, app_name):
    pool = make_pool(min_size=2, max_size=2)
    out = pool.getconn()
    pid_out = out.info.backend_pid
    blocked: list[BaseException] = []

    def waiter() -> None:
        p = pool.getconn()  # gets the second connection
        try:
            pool.getconn(timeout=JOIN)
        except BaseException as e:
            blocked.append(e)
        finally:
            pool.putconn(p)  # returned after close: closed quietly, as psycopg_pool

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    wait_until(lambda: pool.stats()["waiting"] == 1, what="a waiter")
    pool.close()
    t.join(JOIN)
    assert not t.is_alive()
    assert len(blocked) == 1 and isinstance(blocked[0], PoolClosed)
    with pytest.raises(PoolClosed):
        pool.getconn()
    # the borrowed connection still works until it is returned, then it is closed
    assert out.execute("SELECT 1").fetchone() == (1,)
    pool.putconn(out)  # quietly, as psycopg_pool (Django returns into a pool it closed)
    assert out.returned and out.closed
    wait_until(lambda: pid_out not in backends(pg.admin_url, app_name), what="backend closed")
    assert pool.closed
    s = pool.stats()
    assert s["size"] == 0 and s["idle"] == 0


def test_use_after_return_raises(make_pool):
    pool = make_pool(min_size=1)
    conn = pool.getconn()
    pool.putconn(conn)
    with pytest.raises(PoolError, match="already returned"):
        conn.execute("SELECT 1")
    with pytest.raises(PoolError, match="already returned"):
        conn.cursor()
    with pytest.raises(PoolError, match="already returned"):
        conn.autocommit = True
    with pytest.raises(PoolError, match="already returned"):
        pool.putconn(conn)
    assert pool.stats()["idle"] == 1


def test_foreign_putconn_is_refused_and_both_pools_stay_intact(make_pool, dsn):
    a = make_pool(min_size=1, max_size=1, name="a")
    b = make_pool(min_size=1, max_size=1, name="b")
    ca = a.getconn()
    with pytest.raises(PoolError, match=r"does not belong to pool 'b'.*pool 'a'"):
        b.putconn(ca)
    with connect(dsn) as raw:
        with pytest.raises(PoolError, match="outside any pool"):
            b.putconn(raw)  # type: ignore[arg-type]
    a.putconn(ca)
    assert a.stats()["idle"] == 1 and b.stats()["idle"] == 1


def test_close_inside_a_with_block_returns_early(make_pool):
    pool = make_pool(min_size=1, max_size=1)
    with pool.connection() as conn:
        conn.close()
        assert conn.returned
        with pool.connection(timeout=SHORT_TIMEOUT) as again:
            again.execute("SELECT 1")
    assert pool.stats()["in_use"] == 0


def test_configure_runs_once_per_new_connection(make_pool):
    seen: list[int] = []

    def configure(conn: psycopg.Connection) -> None:
        seen.append(conn.info.backend_pid)
        conn.execute("SET application_name = 'configured'")
        conn.commit()

    pool = make_pool(min_size=2, max_size=2, configure=configure)
    for _ in range(5):
        with pool.connection() as conn:
            assert conn.execute("SHOW application_name").fetchone() == ("configured",)
    assert len(seen) == 2


def test_custom_check_and_reset_callbacks_are_called(make_pool):
    checked: list[int] = []
    resets: list[int] = []
    pool = make_pool(
        min_size=1, max_size=1,
        check=lambda c: checked.append(c.info.backend_pid),
        reset=lambda c: resets.append(c.info.backend_pid),
    )  # fmt: skip
    for _ in range(3):
        with pool.connection():
            pass
    assert len(checked) == 3 and len(resets) == 3


def test_stats_report_the_documented_keys(make_pool):
    pool = make_pool(min_size=1, max_size=2)
    with pool.connection():
        pass
    s = pool.stats()
    for key in (
        "size", "idle", "in_use", "waiting", "min_size", "max_size", "borrows", "waits", "timeouts",
        "rejected", "created", "closed", "create_errors", "discarded_broken", "wait_p50_ms",
        "wait_p99_ms", "wait_max_ms", "hold_p50_ms", "hold_p99_ms",
    ):  # fmt: skip
        assert key in s, key
    assert s["in_use"] + s["idle"] == s["size"]
    assert s["borrows"] == 1 and s["created"] == 1


def test_background_threads_stop_on_close_and_on_gc(dsn):
    def names() -> set[str]:
        return {t.name for t in threading.enumerate()}

    pool = ConnectionPool(dsn, min_size=1, name="gc-me")
    pool.wait(SETTLE)
    assert any(n.startswith("gc-me-") for n in names())
    pool.close()
    wait_until(lambda: not any(n.startswith("gc-me-") for n in names()), what="threads gone after close")

    pool = ConnectionPool(dsn, min_size=1, name="gc-me2")
    pool.wait(SETTLE)
    del pool
    gc.collect()
    wait_until(lambda: not any(n.startswith("gc-me2-") for n in names()), what="threads gone after gc")


def test_open_wait_fails_fast_against_a_closed_port():
    from threadpool_db.testing import free_port

    port = free_port()
    pool = ConnectionPool(f"postgresql://app:pw@127.0.0.1:{port}/app", min_size=1, open=False)
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout) as ei:
        pool.open(wait=True, timeout=1.0)
    assert time.monotonic() - t0 < 5.0
    assert f"127.0.0.1:{port}" in str(ei.value)
    assert "refused" in str(ei.value).lower() or "failed" in str(ei.value).lower()
    assert pool.closed


def test_background_open_retries_with_backoff():
    from threadpool_db.testing import free_port

    pool = ConnectionPool(f"postgresql://app:pw@127.0.0.1:{free_port()}/app", min_size=1, num_workers=1)
    try:
        wait_until(lambda: len(pool.connect_attempts()) >= 5, what="5 attempts")
    finally:
        pool.close()
    ts = pool.connect_attempts()
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    assert gaps[3] > gaps[0]  # exponential: 0.1, 0.2, 0.4, 0.8 s (±25%)
    assert pool.stats()["create_errors"] >= 5


def test_sqlite_through_the_generic_dbapi_factory(tmp_path):
    import sqlite3

    path = tmp_path / "x.db"
    pool = ConnectionPool(connect=lambda: sqlite3.connect(path, check_same_thread=False), min_size=1, max_size=2)
    try:
        pool.wait(SETTLE)
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (1)")
        c = pool.getconn()
        c.execute("INSERT INTO t VALUES (2)")
        pool.putconn(c)  # rolled back
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    finally:
        pool.close()


# -- issue 32's review: connect_timeout, the status function, futures' checks ------------------
@pytest.mark.parametrize("form", ["keywords", "uri"])
def test_the_conninfos_connect_timeout_wins_over_the_pools_default(form):
    """A server that takes the TCP connection and never answers: the conninfo's 1 s ends the
    attempt, not the pool's 60 s."""
    deaf = socket.socket()
    try:
        deaf.bind(("127.0.0.1", 0))
        deaf.listen(16)  # the handshake completes in the backlog; nothing ever answers
        port = deaf.getsockname()[1]
        conninfo = (f"host=127.0.0.1 port={port} dbname=x user=x connect_timeout=1" if form == "keywords"
                    else f"postgresql://x@127.0.0.1:{port}/x?connect_timeout=1")  # fmt: skip
        pool = ConnectionPool(conninfo, min_size=1, connect_timeout=60.0, name="deaf")
        try:
            wait_until(lambda: pool.stats()["create_errors"] >= 1, what="the first attempt to time out")
            assert "timeout" in (pool.stats()["last_error"] or "")
        finally:
            pool.close()
    finally:
        deaf.close()


def test_the_connectors_status_follows_a_connect_factorys_driver(dsn):
    """A pool built with connect= learns on its first connection that the factory returns psycopg
    connections; the status read on every return must be psycopg's from then on (the generic
    guess, INTRANS, would make every return reset)."""
    c = Connector.for_pool("sniff", config.Connection(connect=lambda: psycopg.connect(dsn)), connect_timeout=None,
                           check=None, check_timeout=5.0, clock=time.monotonic)  # fmt: skip
    slot = c.open_slot(1, 60.0)
    try:
        assert c.status(slot.raw) == IDLE
        slot.raw.execute("SELECT 1")
        assert c.status(slot.raw) == INTRANS
    finally:
        slot.raw.close()


def test_a_future_that_waited_gets_a_checked_connection(make_pool, pg):
    """The connection a queued future is granted is checked like any borrow's: one whose backend
    died while it was out is discarded, and the future resolves to a new one."""
    pool = make_pool(min_size=1, max_size=1, check="always")
    held = pool.getconn()
    pid = held.info.backend_pid
    fut = pool.getconn_future(timeout=SETTLE)
    wait_until(lambda: pool.stats()["waiting"] == 1, what="the future to queue")
    sql(pg.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: sql(pg.admin_url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0] == 0,
               what="the backend to end")  # fmt: skip
    pool.putconn(held)  # idle as far as libpq knows: handed to the future
    conn = fut.result(SETTLE)
    assert conn.info.backend_pid != pid
    assert conn.execute("SELECT 1").fetchone() == (1,)
    pool.putconn(conn)
    assert pool.stats()["check_failed"] == 1
