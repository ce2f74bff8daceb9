"""A pytest plugin for psycopg's own test suite (loaded by ``run_psycopg.py``, never by our
``make test``): with ``TPDB_CONN=handle`` the suite's ``conn`` fixture (and every fixture
built on it: ``pipeline``, the cursor-factory fixtures ...) is a handle borrowed from a
threadpool_db pool instead of a fresh ``psycopg.Connection``; with ``TPDB_CONN=raw`` the suite
runs as upstream wrote it. Both runs leave out the same tests, those that close the connection
or read its private names (their names and reasons go to ``$TPDB_REPORT/excluded.txt``)."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

MODE = os.environ.get("TPDB_CONN", "raw")
REPORT = os.environ.get("TPDB_REPORT")

# What leaves a test out of both runs, and why: a pool's handle is not the connection's owner,
# so closing it gives it back (psycopg's closed-connection behaviours cannot hold), and private
# names belong to psycopg's connection, not to any wrapper of it.
EXCLUDE = (
    (re.compile(r"\b(conn|aconn)\.close\(\)"), "closes the connection"),
    (re.compile(r"\bwith (conn|aconn):"), "closes the connection (its with block)"),
    (re.compile(r"\b(conn|aconn)\.pgconn\.finish\(\)"), "closes the connection (libpq)"),
    (re.compile(r"\b(conn|aconn)\._[A-Za-z]\w*"), "reads the connection's private names"),
)

# Fixtures that patch the connection's private names (psycopg's ``commands`` fixture replaces
# ``conn._exec_command``): the tests using them are left out as those reading private names.
PRIVATE_FIXTURES = {"commands": "its fixture patches the connection's private _exec_command"}

_pools: dict[Any, Any] = {}


def _fresh_session(raw: Any) -> None:
    """The pool's reset: the session's parameters as the connection started (a test may SET
    client_encoding, DateStyle ...), as an app whose code SETs them would configure its pool.
    Upstream gives each test a new connection; this is the part of that a pool can give."""
    with raw.transaction():
        raw.execute("RESET ALL")


def _pool_for(dsn: str, conn_cls: type) -> Any:
    from threadpool_db import ConnectionPool

    key = (dsn, conn_cls)
    if key not in _pools:
        _pools[key] = ConnectionPool(dsn, min_size=1, max_size=4, connection_class=conn_cls, name="psycopg-suite",
                                     reset=_fresh_session, open=True)  # fmt: skip
    return _pools[key]


def _borrowing(original: Callable[..., Any]) -> Callable[..., Any]:
    """The ``conn`` fixture of psycopg's fix_db.py, with the connect replaced by a borrow."""
    g = original.__globals__

    def conn(conn_cls: type, dsn: str, request: Any, tracefile: Any) -> Iterator[Any]:
        g["check_connection_version"](request.node)
        pool = _pool_for(dsn, conn_cls)
        handle = pool.getconn()
        with g["maybe_trace"](handle.pgconn, tracefile, request.function):
            yield handle
        if handle in pool:  # still borrowed (a test may have given it back itself)
            pool.putconn(handle)

    return conn


def _why_excluded(item: pytest.Item) -> str | None:
    for fixture, why in PRIVATE_FIXTURES.items():
        if fixture in getattr(item, "fixturenames", ()):
            return why
    fn = getattr(item, "function", None)
    if fn is None:
        return None
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    for pattern, why in EXCLUDE:
        if pattern.search(src):
            return why
    return None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only the tests that use ``conn`` (directly or through a fixture) measure the handle; of
    # those, the ones closing it or reading its private names are left out, with the reason.
    kept, dropped, unrelated = [], [], []
    for item in items:
        if "conn" not in getattr(item, "fixturenames", ()):
            unrelated.append(item)
            continue
        why = _why_excluded(item)
        (dropped if why else kept).append((item, why))
    if MODE == "handle":
        done: set[int] = set()
        for item, _ in kept:
            for fixturedef in item._fixtureinfo.name2fixturedefs.get("conn", ()):  # type: ignore[attr-defined]
                if id(fixturedef) not in done and fixturedef.func.__module__ == "tests.fix_db":
                    done.add(id(fixturedef))
                    fixturedef.func = _borrowing(fixturedef.func)  # type: ignore[misc]
    config.hook.pytest_deselected(items=unrelated + [i for i, _ in dropped])
    items[:] = [i for i, _ in kept]
    if REPORT:
        with open(os.path.join(REPORT, "excluded.txt"), "w") as f:
            for item, why in dropped:
                f.write(f"{item.nodeid}\t{why}\n")


def pytest_unconfigure(config: pytest.Config) -> None:
    for pool in _pools.values():
        pool.close()
    _pools.clear()
