"""The demo app: thread-per-request connections beside the bounded pool.

- ``/per-request/<op>``: a new psycopg connection for every request, closed after it. Nothing
  bounds the count: under a spike PostgreSQL refuses with "too many clients".
- ``/pooled/<op>``: the same work through FlaskPool, at most ``max_size`` per worker.
- ``/leaky``: keeps a pooled connection past the leak threshold, to show a leak report.
- ``/``: the live dashboard; ``/api/dashboard`` is what it polls.

Configured from the environment: ``DATABASE_URL`` (required), ``TPDB_MAX_SIZE`` (8),
``TPDB_POOL_TIMEOUT`` (10 s), ``TPDB_LEAK_THRESHOLD`` (2 s), ``TPDB_STATS_DIR``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from typing import Any

import psycopg
from flask import Flask, g, jsonify, request, send_from_directory
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from threadpool_db import PoolError
from threadpool_db.flask import FlaskPool
from threadpool_db.metrics import PoolMetrics

from . import latency, ops, publish
from .schema import ensure_schema, plain_url

PER_REQUEST_APP = "tpdb-demo-per-request"

# The server's refusals of a new connection, by what the server says: (SQLSTATE, what a client
# is told). libpq reports them without a SQLSTATE (psycopg's sqlstate is None for connection
# failures), so it is read off the server's message; the client gets our own words, never the
# server's or the driver's text (which can name the host, port and role).
_REFUSALS = {
    "too many clients already": ("53300", "too many clients"),
    "remaining connection slots are reserved": ("53300", "only reserved connection slots left"),
    "the database system is starting up": ("57P03", "the database is starting up"),
    "the database system is shutting down": ("57P03", "the database is shutting down"),
}


def refusal(e: BaseException) -> tuple[str, str]:
    """(SQLSTATE, what to tell a client) of a refused connection, e.g. ("53300", "too many
    clients")."""
    text = str(e)
    found = next((v for k, v in _REFUSALS.items() if k in text), ("08006", "the database could not be reached"))
    return getattr(e, "sqlstate", None) or found[0], found[1]


POOLED_APP = "tpdb-demo-pooled"


def _own_stats_dir() -> str:
    """Outside gunicorn.conf.py (which names one per run): a folder of this process's own,
    removed when it exits."""
    path = tempfile.mkdtemp(prefix="tpdb-demo-stats-")
    atexit.register(shutil.rmtree, path, True)
    return path


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder="static")
    url = os.environ.get("DATABASE_URL")
    app.config.update(
        DATABASE_URL=url,
        THREADPOOL_DB_CONNINFO=url,
        THREADPOOL_DB_MAX_SIZE=int(os.environ.get("TPDB_MAX_SIZE", "8")),
        THREADPOOL_DB_TIMEOUT=float(os.environ.get("TPDB_POOL_TIMEOUT", "10")),
        THREADPOOL_DB_LEAK_THRESHOLD=float(os.environ.get("TPDB_LEAK_THRESHOLD", "2")),
        # every borrow's stack, so /leaky always shows its line; "sampled" is the usual choice
        THREADPOOL_DB_CAPTURE_STACKS=os.environ.get("TPDB_CAPTURE_STACKS", "full"),
        THREADPOOL_DB_NAME="demo",
        TPDB_STATS_DIR=os.environ.get("TPDB_STATS_DIR") or _own_stats_dir(),
    )
    app.config.setdefault(
        "THREADPOOL_DB_MIN_SIZE", min(int(os.environ.get("TPDB_MIN_SIZE", "2")), app.config["THREADPOOL_DB_MAX_SIZE"])
    )
    app.config.update(config or {})
    if not app.config["DATABASE_URL"]:
        raise RuntimeError("demo_app needs DATABASE_URL (make serve starts an embedded PostgreSQL)")
    app.config["THREADPOOL_DB_CONNINFO"] = app.config["DATABASE_URL"]
    ensure_schema(app.config["DATABASE_URL"])  # plain psycopg: the pool is not created here

    db = FlaskPool(kwargs={"application_name": POOLED_APP})
    db.init_app(app)
    app.register_blueprint(db.stats_blueprint())  # the demo binds to 127.0.0.1 only
    state = app.extensions["threadpool_db"]
    # where requests' time goes, in this worker: inside the app, and waiting for the pool
    times = {"app": latency.Histogram(), "pool_wait": latency.Histogram()}
    publisher_started: list[int] = []
    publisher_lock = threading.Lock()

    def ensure_publisher() -> None:
        # once per process, in the worker (never the gunicorn master)
        pid = os.getpid()
        if pid not in publisher_started:
            with publisher_lock:
                if pid not in publisher_started:
                    PoolMetrics(state.pool)  # this worker's pool, made here (lazily, in the worker)
                    publish.start_publisher(
                        app.config["TPDB_STATS_DIR"],
                        lambda: state.pool if state.started else None,
                        {"pooled": POOLED_APP, "per_request": PER_REQUEST_APP},
                        lambda: {"request_times": {k: v.snapshot() for k, v in times.items()}},
                    )
                    publisher_started.append(pid)  # last: other threads wait on the lock until now

    @app.before_request
    def _publisher() -> None:
        ensure_publisher()
        g.tpdb_t0 = time.perf_counter()

    @app.teardown_request
    def _time_in_app(exc: BaseException | None) -> None:
        t0 = g.get("tpdb_t0")
        if t0 is not None and request.path.startswith(("/pooled/", "/per-request/", "/leaky")):
            times["app"].record((time.perf_counter() - t0) * 1000.0)

    @app.get("/ping")
    def ping() -> Any:
        return jsonify({"pid": os.getpid()})  # readiness without touching the database

    @app.get("/per-request/<op>")
    def per_request(op: str) -> Any:
        if op not in ops.OPS:
            return jsonify({"error": f"unknown op {op!r}"}), 404
        try:
            with psycopg.connect(plain_url(app.config["DATABASE_URL"]), application_name=PER_REQUEST_APP,
                                 connect_timeout=10) as conn:  # fmt: skip
                return jsonify(ops.run(op, conn))
        except psycopg.OperationalError as e:
            # the database refused a new connection: say which refusal, as the server said it
            sqlstate, message = refusal(e)
            return jsonify({"error": "database refused the connection", "sqlstate": sqlstate,
                            "message": message}), 503  # fmt: skip

    @app.get("/pooled/<op>")
    def pooled(op: str) -> Any:
        if op not in ops.OPS:
            return jsonify({"error": f"unknown op {op!r}"}), 404
        t0 = time.perf_counter()
        conn = db.connection()
        times["pool_wait"].record((time.perf_counter() - t0) * 1000.0)
        return jsonify(ops.run(op, conn))

    leaked: list[Any] = []

    @app.get("/leaky")
    def leaky() -> Any:
        """Borrow and keep a connection past the threshold; a timer gives it back later."""
        pool = db.pool
        conn = pool.getconn()  # deliberately not returned by this request
        leaked.append(conn)
        hold = pool.leak_threshold * 1.5 if pool.leak_threshold is not None else 3.0

        def give_back() -> None:
            leaked.remove(conn)
            try:
                pool.putconn(conn)
            except PoolError:  # closed meanwhile (shutdown): it was closed, nothing to do
                pass

        timer = threading.Timer(hold, give_back)
        timer.name, timer.daemon = "tpdb-demo-leaky-return", True
        timer.start()
        return jsonify({"leaked": True, "return_in_s": hold})

    @app.get("/api/worker")
    def worker() -> Any:
        pool = db.pool
        return jsonify({"pid": os.getpid(), "backend_pids": pool.backend_pids()})

    limits: dict[str, int] = {}  # the server's, asked once (they change only with a restart)

    @app.get("/api/dashboard")
    def dashboard_data() -> Any:
        """Every worker's stats and per-second history, and the server's connections (counted
        by the workers' publishers, so the page gets the last minutes at once)."""
        if not limits:
            try:
                with db.pool.connection(timeout=0.5) as conn:
                    mc = int(conn.execute("SHOW max_connections").fetchone()[0])
                    reserved = conn.execute(
                        "SELECT coalesce(sum(setting::int), 0) FROM pg_settings WHERE name IN "
                        "('superuser_reserved_connections', 'reserved_connections')"
                    ).fetchone()[0]
                limits.update(max_connections=mc, refusal_line=mc - int(reserved))  # where it refuses new ones
            except Exception:  # busy or down: the page still shows the workers
                pass
        workers = publish.read_all(app.config["TPDB_STATS_DIR"])
        # every worker counts the same server: the freshest history is the one to show
        history = max((w.get("server_history") or [] for w in workers), key=lambda h: h[-1]["t"] if h else 0,
                      default=[])  # fmt: skip
        latest = history[-1] if history else {}
        server = {**limits, "per_request": latest.get("per_request", 0), "pooled": latest.get("pooled", 0),
                  "total": latest.get("total", 0)}  # fmt: skip
        leaks = [dict(rec, worker=w["pid"]) for w in workers for rec in w.get("leaks", [])]
        return jsonify({"now": time.time(), "workers": workers, "server": server, "server_history": history,
                        "leaks": leaks})  # fmt: skip

    @app.get("/metrics")
    def metrics() -> Any:
        """Prometheus exposition of every worker's pool (multiprocess mode under gunicorn)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}

    @app.get("/")
    def index() -> Any:
        return send_from_directory(app.static_folder, "dashboard.html")  # type: ignore[arg-type]

    return app
