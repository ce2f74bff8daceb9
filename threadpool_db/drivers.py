"""What the pool needs to know about a driver's connection, for psycopg 3 and for any DB-API 2.0.

The pool never talks to a connection directly: it asks its driver adapter. The psycopg adapter
reads the libpq transaction status (no round trip), validates with an empty query bounded by a
timeout, and aborts a connection from another thread by cancelling and shutting the socket
down (``PQfinish`` from a second thread while the owner runs a query is not safe). The generic
adapter knows nothing of transactions, so it rolls back on every return, as SQLAlchemy does.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from psycopg import OperationalError

# Transaction states, the values libpq's PQtransactionStatus uses.
IDLE, ACTIVE, INTRANS, INERROR, UNKNOWN = 0, 1, 2, 3, 4
STATUS_NAMES = ("IDLE", "ACTIVE", "INTRANS", "INERROR", "UNKNOWN")  # libpq's, for messages

# SQLSTATEs after which a connection must not be reused: class 08 (connection exception) and
# 57P01..57P03 (admin shutdown, crash shutdown, cannot connect now).
_FATAL_STATES = frozenset({"57P01", "57P02", "57P03"})

Settings = tuple[Any, ...]


def is_fatal_sqlstate(exc: BaseException | None) -> bool:
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and (state.startswith("08") or state in _FATAL_STATES)


# Connect errors that retrying cannot fix until somebody changes the configuration. libpq
# reports connection failures without a SQLSTATE (psycopg's sqlstate is None), so the server's
# FATAL message text decides when no code is there; the embedded and most servers speak English
# to clients before login (lc_messages applies only after it).
_PERMANENT_STATES = {"28P01": "authentication failed", "28000": "authorization failed",
                     "3D000": "no such database"}  # fmt: skip
_PERMANENT_TEXTS = (
    ("password authentication failed", "authentication failed"),
    ("authentication failed for user", "authentication failed"),
    ("no pg_hba.conf entry", "authorization failed"),
    ("is not permitted to log in", "authorization failed"),
    ("permission denied for database", "authorization failed"),
    ('role "', "authorization failed"),  # role "x" does not exist
    ("does not exist", "no such database"),  # database "x" does not exist
    ("failed to resolve host", "unknown host"),
    ("could not translate host name", "unknown host"),
    ("name or service not known", "unknown host"),
)


class ValidationTimeout(OperationalError):
    """A validation got no answer from the server in time. The link may be silent (a
    partition), so the pool tests its other idle connections in the background instead of
    handing them out one by one for each to time out in turn (``ConnectionPool._validate``)."""


def permanent_cause(exc: BaseException) -> str | None:
    """Why a failed connect will keep failing (``"authentication failed"``, ``"unknown host"``,
    ``"bad conninfo"`` …), or None when it may be transient (refused, timed out, too many
    clients, a server starting up or shutting down)."""
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        return _PERMANENT_STATES.get(state)
    try:
        from psycopg import ProgrammingError
    except ImportError:  # pragma: no cover - psycopg is a dependency
        ProgrammingError = ()  # type: ignore[assignment,misc]
    if isinstance(exc, ProgrammingError):  # raised by libpq's conninfo parser, before any I/O
        return "bad conninfo"
    text = str(exc).lower()
    if "too many clients" in text or "starting up" in text or "shutting down" in text:
        return None
    return next((cause for needle, cause in _PERMANENT_TEXTS if needle in text), None)


# psycopg's Python-side connection settings a borrower may write: restored on return with the
# session ones (the handle's properties mark the connection when one is written).
PYTHON_SETTINGS = ("row_factory", "cursor_factory", "server_cursor_factory", "prepare_threshold", "prepared_max")


@runtime_checkable
class Driver(Protocol):
    """What the connector asks of a kind of connection (its seam, on the consumer's side): make
    one, snapshot and restore its session settings, read its transaction status, roll it back,
    check it within a timeout, close it, abort it from another thread, and name its backend.
    Nothing needs to inherit from it: :class:`DbapiDriver` and :class:`PsycopgDriver` here,
    FairQueuePool's SQLAlchemy records, or an application's own class with these members."""

    name: str  # for messages: "psycopg", "dbapi" ...
    knows_status: bool  # False: status() is a guess, so every return rolls back

    def connect(self) -> Any: ...

    def settings(self, raw: Any) -> Settings: ...

    def restore(self, raw: Any, settings: Settings) -> None: ...

    def status(self, raw: Any) -> int: ...

    def rollback(self, raw: Any) -> None: ...

    def validate(self, raw: Any, timeout: float) -> None: ...

    def close(self, raw: Any) -> None: ...

    def abort(self, raw: Any) -> None: ...

    def backend_pid(self, raw: Any) -> int | None: ...


class DbapiDriver:
    """The generic DB-API 2.0 adapter: a ``connect()`` callable and nothing more known."""

    name = "dbapi"
    knows_status = False  # status() is a guess: INTRANS unless closed

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect

    def connect(self) -> Any:
        return self.adopt(self._connect())

    def adopt(self, raw: Any) -> Any:
        """Make a new connection the pool's (nothing to do for a generic driver)."""
        return raw

    def settings(self, raw: Any) -> Settings:
        """A snapshot of the session settings a borrower may change, to restore on return."""
        return (getattr(raw, "autocommit", None),)

    def restore(self, raw: Any, settings: Settings) -> None:
        if settings[0] is not None and getattr(raw, "autocommit", None) != settings[0]:
            raw.autocommit = settings[0]

    def restore_adapters(self, raw: Any, settings: Settings) -> None:
        """Drop the adapters a borrower registered on the connection (nothing known here)."""

    def status(self, raw: Any) -> int:
        """Transaction status; a driver that cannot tell says INTRANS, so we roll back."""
        return UNKNOWN if getattr(raw, "closed", False) else INTRANS

    def rollback(self, raw: Any) -> None:
        raw.rollback()

    def validate(self, raw: Any, timeout: float) -> None:
        cur = raw.cursor()
        try:
            cur.execute("SELECT 1")
            cur.fetchall()
        finally:
            cur.close()
        raw.rollback()

    def close(self, raw: Any) -> None:
        raw.close()

    def abort(self, raw: Any) -> None:
        """Make the connection unusable from another thread; best effort for unknown drivers."""
        raw.close()

    def backend_pid(self, raw: Any) -> int | None:
        return None


class PsycopgDriver(DbapiDriver):
    """psycopg 3: status from libpq, settings tracked, a bounded validation query."""

    name = "psycopg"
    knows_status = True
    # How long abort()'s cancel request may take (it opens a connection): the leak watchdog and
    # a timed-out check wait for it, so a silent network must not hold them longer than
    # network_timeout (make_driver lowers it to that).
    cancel_timeout = 2.0

    def __init__(self, connect: Callable[[], Any]) -> None:
        super().__init__(connect)

    def adopt(self, raw: Any) -> Any:
        """psycopg_pool's mark of a pooled connection (``_pool``): psycopg's
        ``Connection.__del__`` does not warn about one collected open (a borrowed one whose pool
        is gone; the leak detector reports those that matter)."""
        with contextlib.suppress(AttributeError):  # a connection_class with __slots__
            raw._pool = None
        return raw

    def settings(self, raw: Any) -> Settings:
        """The session settings, then the Python-side ones (PYTHON_SETTINGS), then a copy of its
        adapters map, as the connection came from ``connect`` and ``configure``."""
        from psycopg.adapt import AdaptersMap

        return (raw.autocommit, raw.isolation_level, raw.read_only, raw.deferrable, raw.row_factory,
                raw.cursor_factory, raw.server_cursor_factory, raw.prepare_threshold, raw.prepared_max,
                AdaptersMap(raw.adapters))  # fmt: skip

    def restore(self, raw: Any, settings: Settings) -> None:
        # Called only when the borrow wrote a setting (or touched .raw, or began a two-phase
        # transaction): the two groups are compared apart, so a row_factory write does not set
        # autocommit and the rest again.
        if getattr(raw, "_tpc", None):  # a two-phase transaction left with the status IDLE (after
            raw.tpc_rollback()  # tpc_prepare): end it, or fail the reset (the connection is replaced)
        if (raw.autocommit, raw.isolation_level, raw.read_only, raw.deferrable) != settings[:4]:
            raw.autocommit, raw.isolation_level, raw.read_only, raw.deferrable = settings[:4]
        for name, value in zip(PYTHON_SETTINGS, settings[4:9], strict=True):
            if getattr(raw, name) is not value and getattr(raw, name) != value:
                setattr(raw, name, value)

    def restore_adapters(self, raw: Any, settings: Settings) -> None:
        """A fresh copy (copy-on-write, cheap) of the map the connection had after configure:
        what the borrower registered on ``conn.adapters`` goes. psycopg keeps the map in
        ``_adapters`` (made lazily by its ``adapters`` property), and has no public setter."""
        from psycopg.adapt import AdaptersMap

        raw._adapters = AdaptersMap(settings[9])

    # One attribute read on the libpq wrapper, done in C; a closed or broken connection reads
    # UNKNOWN. (An attrgetter is no descriptor: driver.status(raw) calls it with raw alone.)
    status = operator.attrgetter("pgconn.transaction_status")  # type: ignore[assignment]

    def validate(self, raw: Any, timeout: float) -> None:
        """Round-trip an empty query, which opens no transaction, within ``timeout`` seconds."""
        from psycopg.pq import ExecStatus

        pgconn = raw.pgconn
        if pgconn.transaction_status != IDLE:
            raise OperationalError(f"connection not idle (status {pgconn.transaction_status})")
        # One deadline for the whole round trip (not one timeout per select: a server that
        # dribbles bytes must not stretch the borrower's wait).
        deadline = time.monotonic() + timeout
        pgconn.send_query(b"")
        sock = pgconn.socket
        while pgconn.flush() != 0:
            if not select.select([], [sock], [], max(0.0, deadline - time.monotonic()))[1]:
                raise ValidationTimeout(f"validation timed out after {timeout:g} s (send)")
        ok = False
        while True:
            while pgconn.is_busy():
                if not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise ValidationTimeout(f"validation timed out after {timeout:g} s")
                pgconn.consume_input()
            res = pgconn.get_result()
            if res is None:
                break
            ok = ok or res.status == ExecStatus.EMPTY_QUERY
            if res.status == ExecStatus.FATAL_ERROR:
                msg = (res.error_message or b"").decode("utf-8", "replace").strip()
                raise OperationalError(f"validation failed: {msg}")
        if not ok:
            raise OperationalError("validation failed: no result")

    def abort(self, raw: Any) -> None:
        # Cancel whatever runs, then cut the socket: the owner's next call fails with a broken
        # connection and the backend sees EOF and exits. libpq's cancel is thread-safe.
        try:
            raw.cancel_safe(timeout=self.cancel_timeout)
        except Exception:
            pass
        try:
            fd = raw.pgconn.socket
            s = socket.socket(fileno=os.dup(fd))
            try:
                s.shutdown(socket.SHUT_RDWR)
            finally:
                s.close()
        except Exception:
            pass

    def backend_pid(self, raw: Any) -> int | None:
        try:
            return int(raw.pgconn.backend_pid) or None
        except Exception:
            return None


# libpq's keywords that network_timeout sets (unless the conninfo or kwargs set them).
NETWORK_KEYWORDS = ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout")


def network_settings(network_timeout: float) -> dict[str, int]:
    """libpq's keepalives and TCP_USER_TIMEOUT for "dead after ``network_timeout`` seconds
    without hearing from the server".

    - ``tcp_user_timeout`` bounds how long sent data may stay unacknowledged (a query or a
      COMMIT sent into a cut link): without it Linux retransmits for ~15 min (tcp_retries2).
    - The keepalives bound a wait for a reply with nothing unacknowledged (a query running,
      or an idle connection): first probe after half the budget, then one a second, so the
      kernel gives up at about ``network_timeout`` (with TCP_USER_TIMEOUT set, Linux drops
      the connection at the first probe past it). A healthy server's kernel answers the
      probes however long its query runs: this is no statement timeout.
    libpq takes whole seconds (and milliseconds for tcp_user_timeout)."""
    idle = max(1, int(network_timeout / 2))
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": 1,
        "keepalives_count": max(1, math.ceil(network_timeout - idle)),
        "tcp_user_timeout": max(1, round(network_timeout * 1000)),
    }


def _user_set(info: str) -> frozenset[str]:
    """The keywords a conninfo string sets itself (they win over network_timeout's)."""
    if not info:
        return frozenset()
    from psycopg.conninfo import conninfo_to_dict

    return frozenset(conninfo_to_dict(info))


def make_driver(
    conninfo: str | Callable[[], str] | None,
    connect: Callable[[], Any] | None,
    kwargs: dict[str, Any] | Callable[[], dict[str, Any]] | None,
    connect_timeout: float | None,
    connection_class: type | None = None,
    learn: Callable[[str, dict[str, Any]], None] | None = None,
    network_timeout: float | None = None,
) -> Driver:
    """Pick the adapter: psycopg for a conninfo, or for a factory that returns psycopg conns.

    A callable ``conninfo`` or ``kwargs`` is called once per new connection (rotating
    credentials), and ``learn(conninfo, kwargs)`` sees what it returned before anything can
    fail with it, so the pool can keep the secrets out of every message. ``network_timeout``
    adds libpq's keepalives and tcp_user_timeout (``network_settings``) to every connection
    made from a conninfo, below what the conninfo and kwargs set; a ``connect`` factory makes
    its own connections, so it cannot apply there."""
    if connect is not None:
        return _SniffingDriver(connect)
    import psycopg

    cls = connection_class or psycopg.Connection
    network = network_settings(network_timeout) if network_timeout is not None else None

    # The pool's connect_timeout is a default: one in the kwargs or in the conninfo wins.
    static_timeout = isinstance(conninfo, str) and _names_connect_timeout(conninfo)

    def _connect() -> Any:
        info = conninfo() if callable(conninfo) else conninfo
        kw = dict(kwargs() if callable(kwargs) else (kwargs or {}))
        if learn is not None:
            learn(info or "", kw)
        if connect_timeout is not None and "connect_timeout" not in kw \
                and not (static_timeout if isinstance(conninfo, str) else _names_connect_timeout(info)):  # fmt: skip
            kw["connect_timeout"] = max(1, round(connect_timeout))
        if network:
            given = _user_set(info or "")
            kw.update((k, v) for k, v in network.items() if k not in kw and k not in given)
        return cls.connect(info or "", **kw)

    driver = PsycopgDriver(_connect)
    if network_timeout is not None:
        driver.cancel_timeout = min(driver.cancel_timeout, network_timeout)
    return driver


def _names_connect_timeout(conninfo: str | None) -> bool:
    """Does the libpq string or URI set connect_timeout? (A malformed one: no; connecting
    with it then raises psycopg's own error, which says what is wrong.)"""
    if not conninfo or "connect_timeout" not in conninfo:
        return False
    from psycopg.conninfo import conninfo_to_dict

    try:
        return "connect_timeout" in conninfo_to_dict(conninfo)
    except Exception:
        return False


_ADAPTER_API = (
    "knows_status", "adopt", "settings", "restore", "restore_adapters", "status", "rollback", "validate", "close",
    "abort", "backend_pid",
)  # fmt: skip


class _SniffingDriver(DbapiDriver):
    """A user factory: behave as psycopg when it returns psycopg connections."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        super().__init__(connect)
        self._impl: Driver | None = None

    def connect(self) -> Any:
        raw = self._connect()
        if self._impl is None:
            psycopg3 = _is_psycopg3(raw)
            self._impl = PsycopgDriver(self._connect) if psycopg3 else DbapiDriver(self._connect)
            self.name = self._impl.name
            for attr in _ADAPTER_API:
                setattr(self, attr, getattr(self._impl, attr))
        return self.adopt(raw)


def _is_psycopg3(raw: Any) -> bool:
    """A psycopg 3 connection, subclasses included (``psycopg.Connection.__module__`` is just
    ``"psycopg"``, so the module name is no test)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(raw, psycopg.Connection)
