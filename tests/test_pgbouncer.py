"""Behind a real PgBouncer (Debian's package; .ci/run installs it) in transaction mode."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from threadpool_db import ConnectionPool, PoolTimeout
from threadpool_db.embedded import EmbeddedPostgres, PgBouncer, find_pgbouncer

from .helpers import require, run_threads
from .timing import SETTLE


@pytest.fixture(scope="module", autouse=True)
def _needs_pgbouncer() -> None:
    require("pgbouncer", find_pgbouncer() is not None, "apt-get install pgbouncer")


POOL_SIZE = 2  # PgBouncer's server connections


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    pg = EmbeddedPostgres().start()
    b = None
    try:
        b = PgBouncer(pg, default_pool_size=POOL_SIZE).start()
        yield b
    finally:
        if b is not None:
            b.stop()
        pg.stop()


def _hammer(pool: ConnectionPool) -> list[BaseException]:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        for k in range(30):
            try:
                with pool.connection() as conn:
                    conn.execute("SELECT %s::int + 1", (k,)).fetchone()
            except psycopg.Error as e:
                errors.append(e)

    assert run_threads(6, work) == []
    return errors


def test_without_the_option_prepared_statements_break(bouncer):
    pool = ConnectionPool(bouncer.url(), min_size=4, max_size=4, kwargs={"autocommit": True})
    try:
        pool.wait(SETTLE)
        errors = _hammer(pool)
    finally:
        pool.close()
    assert errors, "expected prepared-statement errors through transaction pooling"
    assert any("prepared statement" in str(e) for e in errors)


def test_with_the_option_nothing_breaks(bouncer):
    for pool in (
        ConnectionPool(bouncer.url(), min_size=4, max_size=4, kwargs={"autocommit": True}, pgbouncer=True),
        ConnectionPool(bouncer.url(flag=True), min_size=4, max_size=4, kwargs={"autocommit": True}),
    ):
        try:
            pool.wait(SETTLE)
            assert pool.pgbouncer is True
            assert _hammer(pool) == []
        finally:
            pool.close()


def test_a_configure_that_sets_session_state_is_refused(bouncer):
    def configure(conn):
        conn.execute("SET statement_timeout = '5s'")

    pool = ConnectionPool(bouncer.url(flag=True), min_size=0, max_size=1, configure=configure)
    try:
        with pytest.raises(PoolTimeout, match="SET LOCAL"):
            pool.getconn(timeout=1.0)
    finally:
        pool.close()

    def local(conn):
        with conn.transaction():
            conn.execute("SET LOCAL statement_timeout = '5s'")

    ok = ConnectionPool(bouncer.url(flag=True), min_size=1, max_size=1, configure=local)
    try:
        ok.wait(SETTLE)
        with ok.connection() as conn:
            conn.execute("SELECT 1")
    finally:
        ok.close()


def test_server_backends_stay_at_the_bouncers_pool_size_while_clients_scale(bouncer):
    # three pools stand in for three app hosts: 12 client connections in all
    pools = [ConnectionPool(bouncer.url(flag=True), min_size=4, max_size=4, name=f"host{i}") for i in range(3)]
    peak = 0
    stop = threading.Event()

    def sampler() -> None:
        nonlocal peak
        while not stop.is_set():
            n = bouncer.server.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' "
                                   "AND backend_type = 'client backend'")[0][0]  # fmt: skip
            peak = max(peak, n)
            time.sleep(0.01)

    s = threading.Thread(target=sampler, daemon=True)
    s.start()
    try:
        for p in pools:
            p.wait(SETTLE)

        def work(i: int) -> None:
            pool = pools[i % 3]
            for _ in range(10):
                with pool.connection() as conn:
                    conn.execute("SELECT pg_sleep(0.005)")

        assert run_threads(12, work) == []
        clients = sum(p.stats()["size"] for p in pools)
    finally:
        stop.set()
        s.join(SETTLE)
        for p in pools:
            p.close()
    assert clients == 12
    assert 1 <= peak <= POOL_SIZE
