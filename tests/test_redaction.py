"""Passwords never show: not in logs, reprs, stats or exceptions (and their chains)."""

from __future__ import annotations

import logging
import traceback
from urllib.parse import urlsplit

import pytest

from threadpool_db import ConnectionPool, PoolConfigError, PoolTimeout
from threadpool_db.embedded import free_port
from threadpool_db.redact import find_secrets, redact_conninfo, scrub

from .helpers import times_out
from .timing import SETTLE, SHORT_TIMEOUT


def _everything(caplog, *objs) -> str:
    parts = []
    for r in caplog.records:
        parts.append(r.getMessage())
        if r.exc_info:
            parts.append("".join(traceback.format_exception(*r.exc_info)))
    for o in objs:
        if isinstance(o, BaseException):
            parts.append("".join(traceback.format_exception(type(o), o, o.__traceback__)))
            parts.append(repr(o.args))
        else:
            parts.append(repr(o))
    return "\n".join(parts)


@pytest.mark.parametrize(
    "conninfo",
    [
        "postgresql://app:s3cr3t-pw@h:5432/db",
        "postgres://app:s3cr3t-pw@h/db?sslmode=disable",
        "host=h user=app password=s3cr3t-pw dbname=db",
        "host=h password = 's3cr3t-pw' dbname=db",
        "postgresql://h/db?user=app&password=s3cr3t-pw",
    ],
)
def test_redact_conninfo_hides_each_form(conninfo):
    out = redact_conninfo(conninfo)
    assert "s3cr3t-pw" not in out
    assert "***" in out
    assert "s3cr3t-pw" in find_secrets(conninfo, None)
    assert "s3cr3t-pw" not in scrub(f"error near {conninfo}", find_secrets(conninfo, None))


def test_password_never_appears_with_a_working_server(pg, caplog):
    caplog.set_level(logging.DEBUG)
    password = urlsplit(pg.url).password
    assert password
    pool = ConnectionPool(pg.url, min_size=1, max_size=1, name="secret-test")
    try:
        pool.wait(SETTLE)
        held = pool.getconn()
        with times_out(SHORT_TIMEOUT) as ei:
            pool.getconn(timeout=SHORT_TIMEOUT)
        text = _everything(caplog, pool, held, pool.stats(), ei.value, pool.borrowed())
        pool.putconn(held)
    finally:
        pool.close()
    assert password not in text
    assert "secret-test" in text  # the text we searched is the real thing


def test_password_never_appears_on_auth_failure_or_unreachable_server(pg, caplog):
    caplog.set_level(logging.DEBUG)
    u = urlsplit(pg.url)
    wrong = "Wr0ng-Passw0rd-XYZ"
    cases = [
        f"postgresql://app:{wrong}@{u.hostname}:{u.port}/app",
        f"postgresql://app:{wrong}@127.0.0.1:{free_port()}/app",
    ]
    errors = []
    for conninfo in cases:
        pool = ConnectionPool(conninfo, min_size=1, open=False, name="bad-auth")
        with pytest.raises((PoolConfigError, PoolTimeout)) as ei:  # wrong password: at once
            pool.open(wait=True, timeout=1.0)
        errors.append(ei.value)
        assert "127.0.0.1" in str(ei.value)
    # and the keyword form
    pool = ConnectionPool(
        f"host={u.hostname} port={u.port} dbname=app user=app", kwargs={"password": wrong},
        min_size=1, open=False,
    )  # fmt: skip
    with pytest.raises(PoolConfigError) as ei:
        pool.open(wait=True, timeout=1.0)
    errors.append(ei.value)
    text = _everything(caplog, *errors)
    assert "password authentication failed" in text  # the real error did surface
    assert wrong not in text
