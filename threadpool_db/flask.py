"""Flask integration: one pool per app, one connection per request, returned at teardown.

```python
db = FlaskPool()            # or FlaskPool(app, max_size=8, leak_threshold=10)
db.init_app(app)

@app.get("/users/<int:uid>")
def user(uid):
    return db.connection().execute("SELECT name FROM users WHERE id = %s", (uid,)).fetchone()
```

- Options come from the constructor and from ``app.config``: ``THREADPOOL_DB_CONNINFO`` and
  ``THREADPOOL_DB_<OPTION>`` for every ConnectionPool parameter; config wins.
- The pool is created on first use, in the process that serves requests: never in the gunicorn
  master, so ``--preload`` is safe.
- ``db.connection()`` borrows on first use in a request or app context, caches the handle on
  ``g._threadpool_db`` and returns the same one for the rest of the context.
- Transactions (``THREADPOOL_DB_TRANSACTION``): ``"commit"`` (default) commits in
  ``after_request`` when the response status is below 400, so a failing commit still becomes a
  500; anything else rolls back. ``"rollback"`` always rolls back: views commit themselves.
  Outside a request (CLI, ``app.app_context()``) the policy applies on a clean context exit.
- The connection always goes back in ``teardown_appcontext``, even when the view raised.
- ``PoolTimeout`` and ``TooManyWaiters`` in a view become HTTP 503 with ``Retry-After``
  (``THREADPOOL_DB_RETRY_AFTER``, seconds) and a JSON body: backpressure, not a 500. When the
  pool has no connection at all the body says ``"database unavailable"`` (not ``"database
  busy"``), so a wrong password does not look like overload; ``PoolConfigError`` (the database
  refuses the configuration) answers the same way at once. The cause (the last connection
  error, password-free) goes to the log; HTTP clients never see the database's host, port,
  role or the driver's text, unless the app runs in debug mode or ``THREADPOOL_DB_EXPOSE_ERRORS``
  is true. ``/healthz`` follows the same rule.
- ``THREADPOOL_DB_OPEN_WAIT`` (True, or seconds): open the pool in ``init_app`` and wait for
  ``min_size`` connections, so a wrong password or an unreachable database fails the boot
  with its cause instead of the first requests.
- A ``max_size`` below the default ``min_size`` (4) lowers ``min_size`` to it, so
  ``FlaskPool(max_size=1)`` works; an explicit ``min_size`` still wins.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, has_request_context, jsonify, request

from .config import PoolConfig
from .connection import PooledConnection
from .errors import PoolConfigError, PoolError, PoolTimeout, TooManyWaiters
from .pool import ConnectionPool

logger = logging.getLogger("threadpool_db.flask")

EXT = "threadpool_db"
PREFIX = "THREADPOOL_DB_"
_POOL_PARAMS = [p for p in inspect.signature(ConnectionPool).parameters if p not in ("open",)]
_EXT_PARAMS = ("transaction", "retry_after", "open_wait", "expose_errors")
# pool parameters that are not configuration to validate
_NOT_CONFIG = ("close_returns", "clock", "driver", "framework_dirs")
_TRANSACTIONS = ("commit", "rollback")


class _State:
    """Per-app state in ``app.extensions["threadpool_db"]``: the options and the lazy pool."""

    def __init__(self, options: dict[str, Any], transaction: str, retry_after: int, name: str,
                 expose_errors: bool = False) -> None:  # fmt: skip
        self.options = options
        self.transaction = transaction
        self.retry_after = retry_after
        self.expose_errors = expose_errors  # the cause of a 503 in its body (else only in the log)
        self.name = name
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    @property
    def pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ConnectionPool(name=self.name, open=True, **self.options)
                pool = self._pool
        return pool

    @property
    def started(self) -> bool:
        return self._pool is not None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()


def _config_value(raw: Any, annotation: str) -> Any:
    """Config from the environment arrives as strings: coerce by the parameter's annotation."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if "None" in annotation and text.lower() in ("", "none", "null"):
        return None
    if annotation.startswith("bool"):
        return text.lower() in ("1", "true", "yes", "on")
    if annotation.startswith("int"):
        return int(text)
    if annotation.startswith("float"):
        return float(text)
    return raw


class FlaskPool:
    """The Flask extension. See the module docstring and the README."""

    def __init__(self, app: Flask | None = None, **pool_options: Any) -> None:
        unknown = set(pool_options) - set(_POOL_PARAMS) - set(_EXT_PARAMS)
        if unknown:
            raise ValueError(f"unknown FlaskPool option(s): {', '.join(sorted(unknown))}")
        self._options = pool_options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXT in app.extensions:
            raise RuntimeError(f"threadpool_db is already registered on app {app.name!r}: call init_app once per app")
        defaults = inspect.signature(ConnectionPool).parameters
        opts: dict[str, Any] = {}
        for key in _POOL_PARAMS:
            annotation = str(defaults[key].annotation)
            if key in self._options:
                opts[key] = self._options[key]
            cfg = PREFIX + key.upper()
            if cfg in app.config:
                opts[key] = _config_value(app.config[cfg], annotation)
        transaction = app.config.get(PREFIX + "TRANSACTION", self._options.get("transaction", "commit"))
        if transaction not in _TRANSACTIONS:
            choices = ", ".join(_TRANSACTIONS)
            raise ValueError(f"THREADPOOL_DB_TRANSACTION must be one of {choices}, got {transaction!r}")
        retry_after = int(app.config.get(PREFIX + "RETRY_AFTER", self._options.get("retry_after", 1)))
        open_wait = _open_wait(app.config.get(PREFIX + "OPEN_WAIT", self._options.get("open_wait", False)))
        expose = _config_value(app.config.get(PREFIX + "EXPOSE_ERRORS", self._options.get("expose_errors", False)),
                               "bool")  # fmt: skip
        if opts.get("conninfo") is None and opts.get("connect") is None:
            raise RuntimeError("threadpool_db needs THREADPOOL_DB_CONNINFO (or a conninfo/connect option)")
        default_min = defaults["min_size"].default
        if "min_size" not in opts and isinstance(opts.get("max_size"), int) and opts["max_size"] < default_min:
            opts["min_size"] = opts["max_size"]  # FlaskPool(max_size=1) means a pool of one
        name = opts.pop("name", None) or f"flask-{app.name}"
        # Validate now, so bad options fail at start-up, not at the first request; the pool
        # itself is made lazily in the serving process.
        PoolConfig.build(name=name, **{k: v for k, v in opts.items() if k not in _NOT_CONFIG})
        state = _State(opts, transaction, retry_after, name, bool(expose))
        app.extensions[EXT] = state
        app.after_request(_after_request)
        app.teardown_appcontext(_teardown)
        app.register_error_handler(PoolTimeout, _busy)
        app.register_error_handler(TooManyWaiters, _busy)
        app.register_error_handler(PoolConfigError, _busy)
        if open_wait is not None:
            pool = state.pool  # opens now; a failure closes it and fails the boot with its cause
            pool.wait(open_wait if open_wait > 0 else pool.timeout)

    # -- per app ------------------------------------------------------------------------------
    @staticmethod
    def _state(app: Flask | None = None) -> _State:
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return app.extensions[EXT]  # type: ignore[no-any-return]
        except KeyError:
            raise RuntimeError(f"threadpool_db is not registered on app {app.name!r}: call init_app") from None

    def pool_for(self, app: Flask | None = None) -> ConnectionPool:
        """The app's pool (created on first use)."""
        return self._state(app).pool

    @property
    def pool(self) -> ConnectionPool:
        """The current app's pool."""
        return self._state().pool

    def connection(self, timeout: float | None = None) -> PooledConnection:
        """The connection of this request/app context, borrowed on first use."""
        conn = g.get("_threadpool_db")
        if conn is None or conn.returned:
            conn = self._state().pool.getconn(timeout)
            g._threadpool_db = conn
        return conn  # type: ignore[no-any-return]

    def close(self, app: Flask | None = None) -> None:
        """Close the app's pool (for tests and shutdown hooks)."""
        self._state(app).close()

    # -- optional endpoints -------------------------------------------------------------------
    def stats_blueprint(self, auth: Callable[[], bool] | None = None, healthz_timeout: float = 2.0) -> Blueprint:
        """``/pool/stats``, ``/pool/leaks`` and ``/healthz``. Register it only if you want it:
        the leak records show code paths. ``auth()`` (if given) must return True, else 403."""
        bp = Blueprint("threadpool_db", __name__)

        if auth is not None:

            @bp.before_request
            def _guard() -> Response | None:
                if not auth():
                    return Response(status=403)
                return None

        @bp.get("/pool/stats")
        def stats() -> Response:
            pool = self._state().pool
            # stats() names the pool and this process (pid): each gunicorn worker has its own
            return jsonify({**pool.stats(), "advice": pool.advise(workers=_workers(), query_server=False)})

        @bp.get("/pool/advice")
        def advice() -> Response:
            return jsonify(self._state().pool.advise(workers=_workers()))

        @bp.get("/pool/leaks")
        def leaks() -> Response:
            return jsonify(self._state().pool.leaks())

        @bp.get("/healthz")
        def healthz() -> tuple[Response, int]:
            pool = self._state().pool
            try:
                with pool.connection(timeout=healthz_timeout) as conn:
                    conn.execute("SELECT 1")
            except Exception as e:
                cause = pool.redact(str(e))
                logger.warning("pool %r: /healthz answered 503: %s", pool.name, cause)
                body = {"status": "unavailable", "pool": pool.name}
                if _expose():
                    body["error"] = cause
                return jsonify(body), 503
            return jsonify({"status": "ok", "pool": pool.name}), 200

        return bp


def _open_wait(value: Any) -> float | None:
    """THREADPOOL_DB_OPEN_WAIT: False/0/"" is off (None); True waits the pool's timeout (0.0);
    a number waits that many seconds."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "0", "false", "no", "off"):
            return None
        if text in ("1", "true", "yes", "on"):
            return 0.0
        value = float(text)
    if value is True:
        return 0.0
    if not value:
        return None
    return float(value)


def _workers() -> int:
    """Processes sharing the server, for the advisor: ?workers=N, else gunicorn's own worker
    count when running under gunicorn, else WEB_CONCURRENCY, else 1."""
    raw = request.args.get("workers") or _gunicorn_workers() or os.environ.get("WEB_CONCURRENCY") or "1"
    try:
        return max(1, int(raw))
    except ValueError:
        return 1


def _gunicorn_workers() -> int | None:
    """Under gunicorn, the master's live worker processes: this worker's siblings (the
    children of its parent), read from /proc. None elsewhere, or where /proc is missing."""
    import sys

    if "gunicorn.workers.base" not in sys.modules:
        return None
    master = os.getppid()
    n = 0
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        # pid (comm) state ppid ...: comm may hold spaces, so split after ")"
                        if int(f.read().rsplit(b")", 1)[1].split()[1]) == master:
                            n += 1
                except (OSError, IndexError, ValueError):
                    continue
    except OSError:
        return None
    return n or None


def _after_request(response: Response) -> Response:
    conn = g.get("_threadpool_db")
    if conn is None or conn.returned:
        return response
    g._threadpool_db_seen = True  # the request path decided; teardown only gives it back
    if FlaskPool._state().transaction == "commit" and response.status_code < 400:
        conn.commit()  # raises here, before the response is sent, if the commit fails
    return response


def _teardown(exc: BaseException | None) -> None:
    conn = g.pop("_threadpool_db", None)
    decided = g.pop("_threadpool_db_seen", False)
    if conn is None or conn.returned:
        return
    state = current_app.extensions[EXT]
    # after_request already committed (or chose not to) for requests; a bare app context
    # commits on a clean exit under the "commit" policy
    commit = not decided and exc is None and state.transaction == "commit" and not has_request_context()
    try:
        state.pool.release(conn, exc, commit=commit)  # rolls back what is left open
    except PoolError:
        pass  # already given back, or reclaimed: nothing to return
    except Exception:
        logger.exception("pool %r: error returning the request's connection", state.name)


def _expose() -> bool:
    """May an HTTP client read why the database failed? Only in debug mode or when the app
    opted in (THREADPOOL_DB_EXPOSE_ERRORS): the cause names the host, port, role and the
    driver's text."""
    return bool(current_app.debug or FlaskPool._state().expose_errors)


def _busy(e: PoolError) -> tuple[Response, int, dict[str, str]]:
    """503 for backpressure and for an unavailable database, saying which, with Retry-After.
    The cause (the pool's last connection error, already password-free) goes to the log, and
    into the body only when _expose() allows it."""
    state = FlaskPool._state()
    cause = getattr(e, "cause", None)
    if cause:
        body = {"error": "database unavailable", "detail": "no connection to the database could be made; retry later"}
        if _expose():
            body["cause"] = cause
    else:
        body = {"error": "database busy", "detail": "no database connection became free in time; retry later"}
    body.update(pool=state.name, retry_after=state.retry_after)
    logger.warning("pool %r: answered 503 to %s %s: %s", state.name, request.method, request.path, e)
    return jsonify(body), 503, {"Retry-After": str(state.retry_after)}
