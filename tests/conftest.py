"""Fixtures: one real PostgreSQL per test session (embedded unless DATABASE_URL is set)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from threadpool_db import ConnectionPool
from threadpool_db.embedded import EmbeddedPostgres, database

from .faults.proxy import FaultProxy
from .timing import LOCK_TIMEOUT


def pytest_configure(config: pytest.Config) -> None:
    """Each run gets a temporary folder of its own (pytest's numbered ones under
    /tmp/pytest-of-<user> are shared by every run of that user: another clone's run may clean
    them up under this one), removed when the run ends."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="tpdb-pytest-")
        config._tpdb_basetemp = config.option.basetemp  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    made = getattr(config, "_tpdb_basetemp", None)
    if made:
        shutil.rmtree(made, ignore_errors=True)


class Server:
    """What a test needs to know of the server: URLs, and the embedded instance if any."""

    def __init__(self, url: str, admin_url: str, embedded: EmbeddedPostgres | None) -> None:
        self.url = url
        self.admin_url = admin_url
        self.embedded = embedded


@pytest.fixture(scope="session")
def pg() -> Iterator[Server]:
    with database({"max_connections": 200}) as (url, server):
        yield Server(url, server.admin_url if server is not None else url, server)


@pytest.fixture
def dsn(pg: Server) -> str:
    return pg.url


@pytest.fixture
def app_name() -> str:
    return f"tpdb-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_pool(pg: Server, app_name: str) -> Iterator[Callable[..., ConnectionPool]]:
    """Build pools on the session server, tagged with this test's application_name; all are
    closed at teardown."""
    pools: list[ConnectionPool] = []

    def make(**kw: Any) -> ConnectionPool:
        kw.setdefault("kwargs", {})
        kw["kwargs"].setdefault("application_name", app_name)
        # a lock left by another test fails a statement here at once instead of hanging it
        kw["kwargs"].setdefault("options", f"-c lock_timeout={LOCK_TIMEOUT}")
        if "connect" not in kw:
            kw.setdefault("conninfo", pg.url)
        wait = kw.pop("wait", True)
        kw.setdefault("open", True)
        pool = ConnectionPool(**kw)
        pools.append(pool)
        if wait and kw.get("open", True):
            pool.wait(30)
        return pool

    yield make
    for p in pools:
        p.close()


# Fault and soak tests own their servers: each gets a fresh embedded PostgreSQL it may stop,
# restart or fill up (even with DATABASE_URL set: they must be able to kill it).
@pytest.fixture
def own_pg() -> Iterator[Callable[..., EmbeddedPostgres]]:
    servers: list[EmbeddedPostgres] = []

    def start(**settings: Any) -> EmbeddedPostgres:
        pg = EmbeddedPostgres(settings)
        servers.append(pg)
        return pg.start()

    yield start
    for pg in servers:
        pg.stop()


@pytest.fixture
def proxy() -> Iterator[Callable[[int], FaultProxy]]:
    made: list[FaultProxy] = []

    def make(port: int) -> FaultProxy:
        p = FaultProxy(port)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture(params=["C", "Python"])
def recorder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a leak-detection test with each borrow-site recorder: the C one (_sight.c, what an
    install with a compiler gets) and the pure-Python one it falls back to. Pools made after
    this fixture use the chosen one."""
    from threadpool_db import leaks

    from .helpers import require_native

    if request.param == "C":
        require_native()
    else:
        monkeypatch.setattr(leaks, "NATIVE", None)
    return str(request.param)


@pytest.fixture(params=["C", "Python"])
def with_methods(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with each of the handle's with-block implementations: the C one (_sight.c)
    and the Python one it falls back to (connection.PYTHON_WITH)."""
    from threadpool_db import connection

    from .helpers import require

    chosen = connection.NATIVE_WITH if request.param == "C" else connection.PYTHON_WITH
    require("the C with-block methods (threadpool_db/_sight.c)", chosen is not None,
            "install gcc and the Python headers, then reinstall threadpool_db")  # fmt: skip
    monkeypatch.setattr(connection.PooledConnection, "__enter__", chosen[0])  # type: ignore[index]
    monkeypatch.setattr(connection.PooledConnection, "__exit__", chosen[1])  # type: ignore[index]
    return str(request.param)
