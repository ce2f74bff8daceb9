"""network_timeout: libpq's keepalives and tcp_user_timeout on every connection the pool
makes, below what the conninfo and kwargs set; validated like every parameter."""

from __future__ import annotations

import socket

import pytest

from threadpool_db import ConnectionPool
from threadpool_db.drivers import network_settings

from .timing import SETTLE


def _options(conn) -> dict[str, str]:
    """The connection's libpq options as libpq holds them (what it really used)."""
    return {o.keyword.decode(): (o.val or b"").decode() for o in conn.pgconn.info}


def _user_timeout_ms(conn) -> int:
    """TCP_USER_TIMEOUT as the kernel holds it on the connection's socket."""
    s = socket.socket(fileno=socket.dup(conn.pgconn.socket))
    try:
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
    finally:
        s.close()


def test_network_timeout_sets_keepalives_and_tcp_user_timeout(make_pool):
    pool = make_pool(min_size=1, network_timeout=3)
    with pool.connection(timeout=SETTLE) as conn:
        opts = _options(conn)
        assert (opts["keepalives"], opts["keepalives_idle"], opts["keepalives_interval"]) == ("1", "1", "1")
        assert (opts["keepalives_count"], opts["tcp_user_timeout"]) == ("2", "3000")
        assert _user_timeout_ms(conn) == 3000


def test_the_default_network_timeout_is_on(make_pool):
    pool = make_pool(min_size=1)
    with pool.connection(timeout=SETTLE) as conn:
        assert _options(conn)["tcp_user_timeout"] == "10000"
        assert _user_timeout_ms(conn) == 10000


def test_what_the_user_sets_wins(make_pool, pg):
    pool = make_pool(min_size=1, network_timeout=3, conninfo=pg.url + "?tcp_user_timeout=7000",
                     kwargs={"keepalives_idle": 5, "application_name": "nt-wins"})  # fmt: skip
    with pool.connection(timeout=SETTLE) as conn:
        opts = _options(conn)
        assert opts["tcp_user_timeout"] == "7000" and opts["keepalives_idle"] == "5"
        assert opts["keepalives_interval"] == "1"  # what the user left alone still comes from network_timeout
        assert _user_timeout_ms(conn) == 7000


def test_none_turns_it_off(make_pool):
    pool = make_pool(min_size=1, network_timeout=None)
    with pool.connection(timeout=SETTLE) as conn:
        opts = _options(conn)
        assert opts["tcp_user_timeout"] in ("", "0") and opts["keepalives_idle"] == ""
        assert _user_timeout_ms(conn) == 0


@pytest.mark.parametrize("bad", [0, -1, "3", True, float("nan")])
def test_a_bad_network_timeout_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="network_timeout"):
        ConnectionPool("", network_timeout=bad, open=False)


@pytest.mark.parametrize("t", [1, 2, 3, 4.5, 10, 15, 60])
def test_the_keepalives_give_up_at_about_network_timeout(t):
    """First probe after idle, one a second after it: dead at idle + count seconds, which is
    network_timeout rounded up to whole seconds (libpq takes whole seconds)."""
    s = network_settings(t)
    gives_up = s["keepalives_idle"] + s["keepalives_interval"] * s["keepalives_count"]
    assert t <= gives_up < t + 1 or (t < 2 and gives_up == 2)
    assert s["tcp_user_timeout"] == round(t * 1000)


def test_an_abort_cancel_waits_no_longer_than_network_timeout():
    """abort() (the leak watchdog's reclaim, a timed-out check) sends a cancel request over a
    new connection: on a silent network it waits at most network_timeout (2 s without one)."""
    assert ConnectionPool("", network_timeout=1, open=False)._connector.driver.cancel_timeout == 1
    assert ConnectionPool("", network_timeout=None, open=False)._connector.driver.cancel_timeout == 2.0
