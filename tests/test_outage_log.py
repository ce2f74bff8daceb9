"""An outage an operator can read: the first failed connect at WARNING, then at most one
line per 10 s per cause with how many failed in between; the target named as libpq resolves
it (PG* variables included); a PoolTimeout's waiting= counts the borrower itself."""

from __future__ import annotations

import logging
import socket
import time

import psycopg
import pytest

from threadpool_db import ConnectionPool, PoolTimeout
from threadpool_db.config import PoolConfig
from threadpool_db.connector import OUTAGE_LOG_INTERVAL, Connector

from .helpers import wait_until
from .timing import SETTLE


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _warnings(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and f"'{name}': cannot connect" in r.getMessage()]  # fmt: skip


def test_a_refused_server_logs_one_warning_not_one_per_attempt(caplog):
    caplog.set_level(logging.DEBUG, logger="threadpool_db")
    pool = ConnectionPool(f"host=127.0.0.1 port={_closed_port()} dbname=x user=x", min_size=1, name="down")
    try:
        wait_until(lambda: len(pool.connect_attempts()) >= 5, what="five attempts")
        assert len(_warnings(caplog, "down")) == 1  # the first; the others at DEBUG
        debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "'down': cannot connect" in r.getMessage()]
        assert len(debug) >= 3
    finally:
        pool.close()


def test_a_long_outage_logs_a_line_per_interval_with_a_count(caplog):
    """The connector's own clock, moved by hand: 25 failed connects over 24 s of outage."""
    caplog.set_level(logging.WARNING, logger="threadpool_db")
    now = [1000.0]
    cfg = PoolConfig.build(f"host=127.0.0.1 port={_closed_port()} dbname=x user=x", min_size=1)
    c = Connector.for_pool("clocked", cfg.connection, connect_timeout=1.0, check=None, check_timeout=1.0,
                           clock=lambda: now[0])  # fmt: skip
    refused = psycopg.OperationalError("connection failed: Connection refused")
    for _ in range(25):
        c.log_failure(c.failed(refused), 1.0, give_up=False)
        now[0] += 1.0
    lines = _warnings(caplog, "clocked")
    assert len(lines) == 3, lines  # at 0, 10 and 20 s
    assert "more failed attempt" not in lines[0]
    assert "; 9 more failed attempt(s) like it since the last warning" in lines[1]
    assert "; 9 more failed attempt(s)" in lines[2]
    # Another cause is logged at once, on its own clock.
    c.log_failure(c.failed(psycopg.OperationalError("connection failed: timeout expired")), 1.0, give_up=False)
    assert len(_warnings(caplog, "clocked")) == 4
    # A success ends the outage: the next failure is news again.
    c.succeeded()
    c.log_failure(c.failed(refused), 1.0, give_up=False)
    assert len(_warnings(caplog, "clocked")) == 5
    assert OUTAGE_LOG_INTERVAL == 10.0


def test_the_target_is_named_as_libpq_resolves_it(monkeypatch, caplog):
    """An empty conninfo with PGHOST/PGPORT set: the logs name PGHOST:PGPORT, not localhost:5432."""
    port = _closed_port()
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(port))
    monkeypatch.setenv("PGDATABASE", "envdb")
    caplog.set_level(logging.WARNING, logger="threadpool_db")
    pool = ConnectionPool("", min_size=1, name="env")
    try:
        wait_until(lambda: _warnings(caplog, "env"), what="a warning")
        assert f"cannot connect to 127.0.0.1:{port}/envdb" in _warnings(caplog, "env")[0]
        assert f"127.0.0.1:{port}/envdb" in repr(pool)
    finally:
        pool.close()


@pytest.mark.parametrize(("conninfo", "shown"), [
    ("host=db.example port=6432 dbname=app", "db.example:6432/app"),
    ("host=/run/postgresql dbname=app", "unix socket /run/postgresql:5432/app"),
])  # fmt: skip
def test_the_conninfo_wins_over_the_environment(monkeypatch, conninfo, shown):
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.delenv("PGPORT", raising=False)
    pool = ConnectionPool(conninfo, min_size=1, open=False)
    assert shown in repr(pool)


def test_a_timeout_counts_the_borrower_itself_as_waiting(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="alone")
    held = pool.getconn()
    try:
        t0 = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=0.2)
        assert time.monotonic() - t0 < SETTLE
        assert "waiting=1," in str(info.value)  # it was the only one waiting: itself
    finally:
        pool.putconn(held)
