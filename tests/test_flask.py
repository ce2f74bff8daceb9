"""The Flask extension with Flask's test client, against the real server."""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import urlsplit

import pytest
from flask import Flask

from threadpool_db import ConnectionPool, PoolConfigError
from threadpool_db.flask import FlaskPool

from .helpers import sql, times_out, wait_until
from .timing import SETTLE


def make_app(dsn: str, **config) -> tuple[Flask, FlaskPool]:
    app = Flask("t")
    app.config.update(THREADPOOL_DB_CONNINFO=dsn, THREADPOOL_DB_MIN_SIZE=1, THREADPOOL_DB_MAX_SIZE=1, **config)
    db = FlaskPool(app, timeout=SETTLE)
    sql(dsn, "CREATE TABLE IF NOT EXISTS t_flask (v int)")

    @app.get("/same")
    def same():
        a, b = db.connection(), db.connection()
        return {"same": a is b, "pid": a.info.backend_pid}

    @app.get("/count/<int:v>")
    def count(v: int):  # through the pool: the same connection as the request before it
        n = db.connection().execute("SELECT count(*) FROM t_flask WHERE v = %s", (v,)).fetchone()[0]
        return {"count": n, "pid": db.connection().info.backend_pid}

    @app.get("/noop")
    def noop():
        return {"borrowed": False}

    @app.post("/insert/<int:v>/<int:status>")
    def insert(v: int, status: int):
        db.connection().execute("INSERT INTO t_flask VALUES (%s)", (v,))
        return {"ok": status < 400}, status

    @app.post("/boom/<int:v>")
    def boom(v: int):
        db.connection().execute("INSERT INTO t_flask VALUES (%s)", (v,))
        raise RuntimeError("view failed")

    @app.get("/hold")
    def hold():
        db.connection()
        return {"held": True}

    return app, db


@pytest.fixture
def flask_app(dsn):
    app, db = make_app(dsn)
    sql(dsn, "TRUNCATE t_flask")
    yield app, db
    db.close(app)


def _count(dsn, v):
    return sql(dsn, "SELECT count(*) FROM t_flask WHERE v = %s", (v,))[0][0]


def test_pool_is_created_lazily_on_first_borrow(flask_app):
    app, _db = flask_app
    assert not app.extensions["threadpool_db"].started
    assert app.test_client().get("/noop").status_code == 200
    assert not app.extensions["threadpool_db"].started
    assert app.test_client().get("/same").status_code == 200
    assert app.extensions["threadpool_db"].started


def test_same_connection_within_a_request_and_returned_after(flask_app):
    app, db = flask_app
    r = app.test_client().get("/same")
    assert r.json["same"] is True
    s = db.pool_for(app).stats()
    assert s["in_use"] == 0 and s["borrows"] == 1


def _rolled_back(app, dsn: str, v: int) -> None:
    """After a request that should have rolled back: its connection is back and idle on the
    server (not "idle in transaction": an open transaction also hides the row from others),
    and the next request, on that same connection, does not see the row."""
    client = app.test_client()
    pid = client.get("/same").json["pid"]  # max_size=1: every request gets this connection
    state = sql(dsn, "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,))
    assert state == [("idle",)], state
    doc = client.get(f"/count/{v}").json
    assert doc == {"count": 0, "pid": pid}
    assert _count(dsn, v) == 0


def test_success_commits_and_error_status_rolls_back(flask_app, dsn):
    app, db = flask_app
    sql(dsn, "DELETE FROM t_flask WHERE v IN (1, 2)")
    c = app.test_client()
    assert c.post("/insert/1/200").status_code == 200
    assert c.post("/insert/2/400").status_code == 400
    assert _count(dsn, 1) == 1
    _rolled_back(app, dsn, 2)
    assert db.pool_for(app).stats()["in_use"] == 0


def test_exception_in_view_rolls_back_and_returns(flask_app, dsn):
    app, db = flask_app
    app.testing = False  # let Flask turn the error into a 500 like in production
    r = app.test_client().post("/boom/3")
    assert r.status_code == 500
    _rolled_back(app, dsn, 3)
    s = db.pool_for(app).stats()
    assert s["in_use"] == 0 and s["idle"] == 1


def test_rollback_policy_never_commits(dsn):
    app, db = make_app(dsn, THREADPOOL_DB_TRANSACTION="rollback")
    try:
        sql(dsn, "DELETE FROM t_flask WHERE v = 4")
        assert app.test_client().post("/insert/4/200").status_code == 200
        _rolled_back(app, dsn, 4)
    finally:
        db.close(app)


def test_app_context_outside_a_request_commits_on_clean_exit(flask_app, dsn):
    app, db = flask_app
    with app.app_context():
        db.connection().execute("INSERT INTO t_flask VALUES (5)")
    assert _count(dsn, 5) == 1
    with pytest.raises(ZeroDivisionError):
        with app.app_context():
            db.connection().execute("INSERT INTO t_flask VALUES (6)")
            1 / 0  # noqa: B018
    assert _count(dsn, 6) == 0
    assert db.pool_for(app).stats()["in_use"] == 0


def test_pool_timeout_becomes_503_with_retry_after(dsn):
    app, db = make_app(dsn, THREADPOOL_DB_TIMEOUT="0.2", THREADPOOL_DB_RETRY_AFTER=3)
    try:
        held = db.pool_for(app).getconn()
        r = app.test_client().get("/same")
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "3"
        assert r.json["error"] == "database busy" and r.json["retry_after"] == 3
        db.pool_for(app).putconn(held)
        assert app.test_client().get("/same").status_code == 200
        assert db.pool_for(app).stats()["timeouts"] == 1
    finally:
        db.close(app)


def test_registering_twice_raises(flask_app):
    app, db = flask_app
    with pytest.raises(RuntimeError, match="already registered"):
        db.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        FlaskPool(app)


def test_config_overrides_constructor_options(dsn):
    app = Flask("cfg")
    app.config.update(THREADPOOL_DB_CONNINFO=dsn, THREADPOOL_DB_MAX_SIZE="3", THREADPOOL_DB_NAME="from-config")
    db = FlaskPool(app, min_size=1, max_size=2, name="from-ctor")
    try:
        pool = db.pool_for(app)
        assert pool.max_size == 3 and pool.min_size == 1 and pool.name == "from-config"
    finally:
        db.close(app)


def test_bad_options_fail_at_init_app(dsn):
    app = Flask("bad")
    app.config.update(THREADPOOL_DB_CONNINFO=dsn, THREADPOOL_DB_MAX_SIZE=0)
    with pytest.raises(ValueError, match="max_size"):
        FlaskPool(app)
    with pytest.raises(ValueError, match="unknown FlaskPool option"):
        FlaskPool(max_sise=3)


def test_two_apps_get_two_pools(dsn):
    db = FlaskPool(min_size=1)
    a, b = Flask("a"), Flask("b")
    for app in (a, b):
        app.config["THREADPOOL_DB_CONNINFO"] = dsn
        db.init_app(app)
    try:
        assert db.pool_for(a) is not db.pool_for(b)
        assert db.pool_for(a).name == "flask-a"
    finally:
        db.close(a)
        db.close(b)


def test_stats_blueprint_serves_stats_leaks_and_healthz_without_secrets(flask_app, dsn):
    app, db = flask_app
    app.register_blueprint(db.stats_blueprint())
    c = app.test_client()
    c.get("/same")
    stats = c.get("/pool/stats")
    assert stats.status_code == 200 and stats.json["borrows"] == 1
    assert c.get("/pool/leaks").json == []
    assert c.get("/healthz").json["status"] == "ok"
    password = urlsplit(dsn).password
    assert password not in json.dumps(stats.json)


def test_healthz_says_503_when_the_database_is_unreachable():
    from threadpool_db.embedded import free_port

    app = Flask("down")
    app.config["THREADPOOL_DB_CONNINFO"] = f"postgresql://app:Sekr1t-pw@127.0.0.1:{free_port()}/app"
    db = FlaskPool(app, min_size=0, max_size=1)
    app.register_blueprint(db.stats_blueprint(healthz_timeout=0.5))
    try:
        r = app.test_client().get("/healthz")
        assert r.status_code == 503 and r.json["status"] == "unavailable"
        text = r.get_data(as_text=True)
        assert "Sekr1t-pw" not in text and "127.0.0.1" not in text and "refused" not in text
    finally:
        db.close(app)


def test_stats_blueprint_auth_hook(flask_app):
    app, db = flask_app
    app.register_blueprint(db.stats_blueprint(auth=lambda: False))
    assert app.test_client().get("/pool/stats").status_code == 403


def test_pool_timeout_propagates_outside_flask_handlers(flask_app):
    app, db = flask_app
    with app.app_context():
        held = db.pool.getconn()
        with times_out(0.1):
            db.pool.getconn(timeout=0.1)
        db.pool.putconn(held)


def test_a_wrong_password_answers_503_and_logs_its_cause_once(pg, caplog):
    u = urlsplit(pg.url)
    wrong = f"postgresql://app:Wr0ng-Secret-42@{u.hostname}:{u.port}/app"
    app = Flask("wrongpw")
    app.config.update(THREADPOOL_DB_CONNINFO=wrong, THREADPOOL_DB_TIMEOUT=SETTLE)
    db = FlaskPool(app, max_size=2)

    @app.get("/q")
    def q():
        return {"v": db.connection().execute("SELECT 1").fetchone()[0]}

    try:
        with caplog.at_level(logging.DEBUG, logger="threadpool_db"):
            client = app.test_client()
            bodies = [client.get("/q") for _ in range(3)]
        for r in bodies:
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            body = r.get_json()
            assert body["error"] == "database unavailable", body  # not "database busy"
            text = r.get_data(as_text=True)
            # nothing about the database for HTTP clients: no host, port, role or driver text
            for secret in ("Wr0ng-Secret-42", "password authentication", str(u.port), u.hostname, '"app"', "FATAL"):
                assert secret not in text, (secret, text)
        warned = [r.getMessage() for r in caplog.records if "answered 503" in r.getMessage()]
        assert len(warned) == 3 and all("password authentication failed" in w for w in warned), warned

        def errors() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "threadpool_db"]

        # the pool logs the cause just after it records it (which the 503s may have seen first)
        wait_until(errors, what="the ERROR line")
        with app.app_context():  # and it stays one line while the pool retries
            wait_until(lambda: db.pool.stats()["create_errors"] >= 3, what="two more attempts")
        assert len(errors()) == 1 and "password authentication failed" in errors()[0], errors()
    finally:
        db.close(app)


def test_an_unreachable_database_answers_503_naming_the_cause_not_busy():
    from threadpool_db.embedded import free_port

    app = Flask("down")
    app.config.update(THREADPOOL_DB_CONNINFO=f"postgresql://app:pw@127.0.0.1:{free_port()}/app")
    db = FlaskPool(app, max_size=1, timeout=1.0)

    @app.get("/q")
    def q():
        return {"v": db.connection().execute("SELECT 1").fetchone()[0]}

    try:
        r = app.test_client().get("/q")
        assert r.status_code == 503
        assert r.get_json()["error"] == "database unavailable"
        assert "Connection refused" not in r.get_data(as_text=True)
    finally:
        db.close(app)


@pytest.mark.parametrize("how", ["config", "debug"])
def test_the_cause_reaches_the_body_only_when_the_app_opts_in(how):
    from threadpool_db.embedded import free_port

    app = Flask(f"optin-{how}")
    app.config.update(THREADPOOL_DB_CONNINFO=f"postgresql://app:pw@127.0.0.1:{free_port()}/app")
    if how == "config":
        app.config["THREADPOOL_DB_EXPOSE_ERRORS"] = "true"  # as it arrives from the environment
    else:
        app.debug = True
    db = FlaskPool(app, max_size=1, timeout=1.0)
    app.register_blueprint(db.stats_blueprint(healthz_timeout=1.0))

    @app.get("/q")
    def q():
        return {"v": db.connection().execute("SELECT 1").fetchone()[0]}

    try:
        client = app.test_client()
        r = client.get("/q")
        assert r.status_code == 503 and r.get_json()["error"] == "database unavailable"
        assert "Connection refused" in r.get_json()["cause"]
        h = client.get("/healthz")
        assert h.status_code == 503 and "Connection refused" in h.get_json()["error"]
    finally:
        db.close(app)


def test_open_wait_fails_the_boot_with_the_cause(pg):
    u = urlsplit(pg.url)
    app = Flask("boot")
    app.config.update(THREADPOOL_DB_CONNINFO=f"postgresql://app:nope-Nope-1@{u.hostname}:{u.port}/app",
                      THREADPOOL_DB_OPEN_WAIT=True)  # fmt: skip
    with pytest.raises(PoolConfigError, match="password authentication failed"):
        FlaskPool(app, max_size=1)
    good = Flask("boot-ok")
    good.config.update(THREADPOOL_DB_CONNINFO=pg.url, THREADPOOL_DB_OPEN_WAIT="5")
    db = FlaskPool(good, max_size=2)
    try:
        assert db.pool_for(good).stats()["size"] == 2  # opened and filled in init_app
    finally:
        db.close(good)


def test_max_size_below_the_default_min_size_lowers_it(dsn):
    app = Flask("one")
    app.config["THREADPOOL_DB_CONNINFO"] = dsn
    db = FlaskPool(app, max_size=1)
    try:
        pool = db.pool_for(app)
        assert (pool.min_size, pool.max_size) == (1, 1)
    finally:
        db.close(app)
    app2 = Flask("explicit")
    app2.config.update(THREADPOOL_DB_CONNINFO=dsn, THREADPOOL_DB_MIN_SIZE=2)
    with pytest.raises(ValueError, match="max_size"):  # an explicit min_size still wins
        FlaskPool(app2, max_size=1)
    with pytest.raises(ValueError, match="max_size"):  # the plain pool keeps psycopg_pool's rule
        ConnectionPool(dsn, max_size=1, open=False)


def test_stats_name_the_pool_and_the_worker_process(flask_app):
    app, db = flask_app
    app.register_blueprint(db.stats_blueprint())
    doc = app.test_client().get("/pool/stats").get_json()
    assert doc["pid"] == os.getpid() and doc["name"] == "flask-t"
