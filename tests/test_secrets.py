"""One test that greps every surface for the password: logs at every level, reprs, stats,
exceptions with their chains, leak reports, the Flask endpoints and the demo dashboard."""

from __future__ import annotations

import json
import logging
import threading
import traceback
from urllib.parse import urlsplit

import pytest
from flask import Flask

from threadpool_db import ConnectionPool, PoolConfigError, PoolError
from threadpool_db.flask import FlaskPool

from .helpers import times_out, wait_until
from .timing import SETTLE


def _exc_text(e: BaseException) -> str:
    parts = ["".join(traceback.format_exception(type(e), e, e.__traceback__)), repr(e.args)]
    while e.__cause__ or e.__context__:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
        parts.append(repr(e) + repr(e.args))
    return "\n".join(parts)


def test_the_password_appears_nowhere(pg, caplog, tmp_path, monkeypatch):
    caplog.set_level(logging.DEBUG)
    password = urlsplit(pg.url).password or ""
    if len(password) <= 8:
        # A short password can occur in any text by chance, so grepping for it proves nothing:
        # a requirement on the test database (the embedded one's has 22 characters).
        pytest.skip(f"this test needs a database password longer than 8 characters; DATABASE_URL's has "
                    f"{len(password)}: point DATABASE_URL at a role with a longer one, or unset it")  # fmt: skip
    seen: list[str] = []

    # a pool with leak detection, a leak report, a timeout with holders, reprs and stats
    pool = ConnectionPool(pg.url, min_size=1, max_size=1, leak_threshold=0.2, capture_stacks="full", name="sec")
    try:
        pool.wait(SETTLE)
        held = pool.getconn()
        wait_until(pool.leaks, what="a leak report")
        with times_out(0.2) as ei:
            pool.getconn(timeout=0.2)
        seen += [repr(pool), repr(held), json.dumps(pool.stats()), json.dumps(pool.leaks()),
                 json.dumps(pool.borrowed()), json.dumps(pool.leak_reports()), _exc_text(ei.value)]  # fmt: skip
        pool.putconn(held)
    finally:
        pool.close()

    # a failing open, with a wrong password that must not show either
    wrong = "Wr0ngPassw0rd-1234"
    u = urlsplit(pg.url)
    bad = ConnectionPool(f"postgresql://app:{wrong}@{u.hostname}:{u.port}/app", min_size=1, open=False)
    with pytest.raises(PoolConfigError) as ei2:
        bad.open(wait=True, timeout=1.0)
    seen += [_exc_text(ei2.value), repr(bad), json.dumps(bad.stats())]

    # the Flask endpoints
    app = Flask("sec")
    app.config["THREADPOOL_DB_CONNINFO"] = pg.url
    db = FlaskPool(app, min_size=1, leak_threshold=5.0)
    app.register_blueprint(db.stats_blueprint())
    client = app.test_client()
    for path in ("/pool/stats", "/pool/leaks", "/healthz"):
        seen.append(client.get(path).get_data(as_text=True))
    db.close(app)

    # the demo dashboard (its JSON is what the page shows)
    monkeypatch.setenv("DATABASE_URL", pg.url)
    monkeypatch.setenv("TPDB_STATS_DIR", str(tmp_path / "stats"))
    from demo_app import create_app

    demo = create_app()
    dc = demo.test_client()
    dc.get("/pooled/read")
    dc.get("/leaky")
    wait_until(lambda: json.loads(dc.get("/api/dashboard").get_data())["workers"], what="dashboard data")
    seen.append(dc.get("/api/dashboard").get_data(as_text=True))
    seen.append(dc.get("/").get_data(as_text=True))
    for t in threading.enumerate():
        if t.name == "tpdb-demo-leaky-return":
            t.join(SETTLE)
    demo.extensions["threadpool_db"].close()

    for r in caplog.records:  # every log record at every level
        seen.append(r.getMessage())
        if r.exc_info:
            seen.append("".join(traceback.format_exception(*r.exc_info)))
    text = "\n".join(seen)
    assert "password authentication failed" in text  # the failure did reach the text we grep
    assert "suspected leak" in text
    assert password not in text
    assert wrong not in text


# Connect errors whose own text carries the secret: libpq echoes a malformed percent-escape
# of the URI's password, and a DSN pasted into "host" comes back in the resolver's error. The
# greps above could never fail for these paths: every error they provoke is password-free.
_ECHO = "S3cr%zzEt-pw"


def _echo_cases(port: int) -> list[tuple[str, object, object, str]]:
    uri = f"postgresql://app:{_ECHO}@127.0.0.1:{port}/app"
    return [
        ("percent-token", uri, None, _ECHO),
        ("percent-token-callable", lambda: uri, None, _ECHO),
        (
            "dsn-in-host",
            "dbname=app user=app",
            {"host": "postgresql://app:H0st-Secr3t@no-such-host.invalid/app"},
            "H0st-Secr3t",
        ),
    ]


@pytest.mark.parametrize("case", ["percent-token", "percent-token-callable", "dsn-in-host"])
def test_secrets_echoed_by_connect_errors_are_scrubbed_everywhere(case, pg, caplog):
    caplog.set_level(logging.DEBUG)
    u = urlsplit(pg.url)
    name, conninfo, kwargs, secret = next(c for c in _echo_cases(u.port or 5432) if c[0] == case)
    seen: list[str] = []
    pool = ConnectionPool(conninfo, kwargs=kwargs, min_size=1, max_size=1, name=f"echo-{name}")  # type: ignore[arg-type]
    try:
        wait_until(lambda: pool.stats()["create_errors"] >= 2, what="two failed connects")  # first + a retry
        with pytest.raises(PoolError) as ei:  # PoolConfigError at once, or PoolTimeout
            pool.getconn(timeout=0.5)
        seen += [_exc_text(ei.value), repr(pool), json.dumps(pool.stats()), str(ei.value.cause)]  # type: ignore[attr-defined]
        # Flask's 503 body for the same pool's failure
        app = Flask(f"echo-{name}")
        app.config["THREADPOOL_DB_CONNINFO"] = conninfo
        db = FlaskPool(app, kwargs=kwargs, min_size=1, max_size=1, timeout=0.5)

        @app.get("/q")
        def q() -> str:
            return str(db.connection().execute("SELECT 1").fetchone())

        client = app.test_client()
        wait_until(lambda: db.pool_for(app).stats()["create_errors"] >= 1, what="the Flask pool's first failure")
        resp = client.get("/q")
        assert resp.status_code == 503
        seen.append(resp.get_data(as_text=True))
        db.close(app)
    finally:
        pool.close()
    for r in caplog.records:
        seen.append(r.getMessage())
        if r.exc_info:
            seen.append("".join(traceback.format_exception(*r.exc_info)))
    text = "\n".join(seen)
    # the error itself did reach the text we grep (so the grep can fail), minus the secret
    assert "percent-encoded" in text or "resolve host" in text or "translate host" in text
    assert secret not in text
