"""Running behind PgBouncer in transaction mode.

Each transaction may run on a different server connection, so nothing that lives in the
*session* survives: server-side prepared statements (psycopg prepares a query it has run
``prepare_threshold`` times), ``SET`` (as opposed to ``SET LOCAL``), ``LISTEN``, advisory locks
held across transactions. With ``pgbouncer=True`` (or ``pgbouncer=true`` in the DSN, which the
pool removes before libpq sees it) the pool turns psycopg's prepared statements off
(``prepare_threshold=None``) and refuses a ``configure`` callback that sets session state: the
setting would land on one server connection and leak into other clients' transactions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import PoolError

# pgbouncer=true in a URI query or in a key=value conninfo
_URI_FLAG = re.compile(r"([?&])pgbouncer=([^&#]*)&?", re.IGNORECASE)
_KV_FLAG = re.compile(r"(^|\s)pgbouncer\s*=\s*(\S+)", re.IGNORECASE)
_TRUE = ("1", "true", "yes", "on")
# statements whose effect outlives the transaction (SET LOCAL is fine)
_SESSION = re.compile(r"^\s*(SET(?!\s+LOCAL\b)\s|RESET\s|PREPARE\s|LISTEN\s|SELECT\s+set_config\s*\(.*,\s*false\s*\))",
                      re.IGNORECASE | re.DOTALL)  # fmt: skip


def take_flag(conninfo: str) -> tuple[str, bool]:
    """Remove a ``pgbouncer=...`` setting from a conninfo; return (clean conninfo, flag)."""
    if "://" in conninfo:
        m = _URI_FLAG.search(conninfo)
        if not m:
            return conninfo, False
        clean = conninfo[: m.start()] + (m.group(1) if m.group(0).endswith("&") else "") + conninfo[m.end() :]
        return clean.rstrip("?&"), m.group(2).lower() in _TRUE
    m = _KV_FLAG.search(conninfo)
    if not m:
        return conninfo, False
    return (conninfo[: m.start()] + m.group(1) + conninfo[m.end() :]).strip(), m.group(2).lower() in _TRUE


def check_statement(query: Any, raw: Any) -> None:
    text = query.as_string(raw) if hasattr(query, "as_string") else query
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    if isinstance(text, str) and _SESSION.match(text):
        head = " ".join(text.split()[:3])
        raise PoolError(
            f"configure runs {head!r}, session state that PgBouncer's transaction mode does not keep "
            "(it would leak into other clients' transactions): use SET LOCAL inside each transaction, "
            "ALTER ROLE ... SET on the server, or connection options"
        )


class _GuardedCursor:
    def __init__(self, cur: Any, raw: Any) -> None:
        self._cur, self._raw = cur, raw

    def execute(self, query: Any, *a: Any, **kw: Any) -> Any:
        check_statement(query, self._raw)
        return self._cur.execute(query, *a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def __enter__(self) -> _GuardedCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cur.close()


class _GuardedConnection:
    """What a ``configure`` callback sees behind PgBouncer: the connection, with its statements
    checked for session state."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def execute(self, query: Any, *a: Any, **kw: Any) -> Any:
        check_statement(query, self._raw)
        return self._raw.execute(query, *a, **kw)

    def cursor(self, *a: Any, **kw: Any) -> Any:
        return _GuardedCursor(self._raw.cursor(*a, **kw), self._raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def guard_configure(configure: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    if configure is None:
        return None

    def guarded(raw: Any) -> Any:
        return configure(_GuardedConnection(raw))

    return guarded
