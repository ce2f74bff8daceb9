"""The Django ENGINE (threadpool_db.django) against the real server: the built-in pool's
behaviour, and what it adds (leak reports naming the view and the request, threads that end
holding a connection, server-side cursors closed at return, fork, the 503)."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("django", reason="the django extra is part of the test extra")

import django
from django.core.exceptions import ImproperlyConfigured

from .helpers import in_child, line_of, wait_until
from .timing import JOIN, SETTLE

LEAK = 0.5  # the test project's leak threshold (seconds)


@pytest.fixture(scope="module")
def project(pg) -> Iterator[Any]:
    """The test project (tests/django_project), set up once, with its table."""
    ours = {"TPDB_DJANGO_URL": pg.url, "TPDB_DJANGO_LEAK": str(LEAK),
            "DJANGO_SETTINGS_MODULE": "tests.django_project.settings"}  # fmt: skip
    before = {k: os.environ.get(k) for k in ours}
    os.environ.update(ours)
    django.setup()  # reads the settings module now; the environment goes back at the end
    from django.db import connection, connections

    from .django_project.models import Item

    with connection.schema_editor() as editor:
        editor.execute("DROP TABLE IF EXISTS tpdb_django_item")
        editor.create_model(Item)
    Item.objects.bulk_create([Item(name=f"item-{i}") for i in range(10)])
    connections.close_all()
    yield Item
    with connection.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS tpdb_django_item")
    connections.close_all()
    for alias in connections:
        connections[alias].close_pool()
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _in_thread(fn: Any, name: str = "test-thread") -> threading.Thread:
    t = threading.Thread(target=fn, name=name, daemon=True)
    t.start()
    return t


def _get(path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET through Django's WSGI handler, as a server makes it (Django's test Client
    disconnects the signal that gives connections back): status, headers, body."""
    from wsgiref.util import setup_testing_defaults

    from django.core.handlers.wsgi import WSGIHandler

    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "HTTP_HOST": "127.0.0.1"}
    setup_testing_defaults(environ)
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.update(status=int(status.split()[0]), headers=dict(headers))

    response = WSGIHandler()(environ, start_response)
    try:
        body = b"".join(response)
    finally:
        response.close()  # request_finished: the connections go back
    return started["status"], started["headers"], body


def _wrapper(alias: str = "default") -> Any:
    from django.db import connections

    return connections[alias]


def test_the_pool_is_ours_and_connections_go_back_after_a_request(project):
    from threadpool_db import ConnectionPool
    from threadpool_db.django import pools

    pool = _wrapper().pool
    assert type(pool) is ConnectionPool and pool.name == "django-default"
    assert pools() == {"default": pool, "one": _wrapper("one").pool, "release": _wrapper("release").pool}
    borrows = pool.stats()["borrows"]
    status, _, body = _get("/count")
    assert status == 200 and json.loads(body) == {"count": 10}
    stats = pool.stats()
    assert stats["borrows"] == borrows + 1 and stats["in_use"] == 0  # given back at request_finished


def test_atomic_blocks_commit_and_roll_back_through_the_pool(project):
    from django.db import transaction

    Item = project
    with transaction.atomic():
        Item.objects.create(name="atomic-kept")
    with pytest.raises(RuntimeError), transaction.atomic():
        Item.objects.create(name="atomic-gone")
        raise RuntimeError("roll back")
    _wrapper().close()
    assert Item.objects.filter(name="atomic-kept").count() == 1
    assert Item.objects.filter(name="atomic-gone").count() == 0
    Item.objects.filter(name="atomic-kept").delete()
    _wrapper().close()
    assert _wrapper().pool.stats()["in_use"] == 0


def test_conn_max_age_and_bad_options_are_refused_naming_the_alias(project):
    from django.db import connections

    conn = connections["default"].copy("tpdb_bad")
    conn.settings_dict = {**conn.settings_dict, "CONN_MAX_AGE": 60, "OPTIONS": {"pool": True}}
    with pytest.raises(ImproperlyConfigured, match="Pooling doesn't support persistent connections"):
        _ = conn.pool
    conn.settings_dict = {**conn.settings_dict, "CONN_MAX_AGE": 0, "OPTIONS": {"pool": {"max_size": -1}}}
    with pytest.raises(ImproperlyConfigured, match=r"DATABASES\['tpdb_bad'\].*max_size"):
        _ = conn.pool
    conn.settings_dict = {**conn.settings_dict, "OPTIONS": {"pool": {"maxsize": 2}}}
    with pytest.raises(ImproperlyConfigured, match=r"unknown option.*maxsize"):
        _ = conn.pool
    conn.settings_dict = {**conn.settings_dict, "OPTIONS": {"pool": {"kwargs": {}}}}
    with pytest.raises(ImproperlyConfigured, match="kwargs cannot be set here"):
        _ = conn.pool


def test_the_check_follows_conn_health_checks_unless_the_pool_sets_one(project):
    from django.db import connections

    def check_of(health: bool, options: Any) -> Any:
        conn = connections["default"].copy("tpdb_check")
        conn.settings_dict = {**conn.settings_dict, "CONN_HEALTH_CHECKS": health, "OPTIONS": {"pool": options}}
        try:
            return conn.pool.config.checks.check
        finally:
            conn.close_pool()

    assert check_of(False, True) == "auto"
    assert check_of(True, True) == "always"
    assert check_of(True, {"check": "never"}) == "never"


def test_a_leak_report_names_the_views_line_and_the_request(project):
    from .django_project import views

    pool = _wrapper().pool
    views.gate.clear()
    got: dict[str, Any] = {}
    t = _in_thread(lambda: got.setdefault("response", _get("/slow")), name="request-thread")
    try:
        report = wait_until(lambda: next((r for r in pool.leaks() if r["context"] == "GET /slow"), None),
                            what="a leak report for GET /slow")  # fmt: skip
    finally:
        views.gate.set()
        t.join(JOIN)
    assert not t.is_alive() and got["response"][0] == 200
    line = line_of(views.slow, "# borrow: the leak report's line")
    assert report["borrow_site"] == f"{views.__file__}:{line}"  # the app's line, no Django frame
    assert report["thread_name"] == "request-thread" and report["state"] == "busy"
    assert "borrowed for GET /slow" in report["summary"]
    wait_until(lambda: pool.stats()["in_use"] == 0, what="the request's connection to go back")


def test_a_thread_that_ends_holding_a_connection_is_named_and_reclaimed(project):
    Item = project
    pool = _wrapper().pool
    before = pool.stats()["leaks_reclaimed"]

    def task() -> None:
        Item.objects.count()  # and never gives it back

    t = _in_thread(task, name="forgetful-task")
    t.join(JOIN)
    assert not t.is_alive()
    report = wait_until(
        lambda: next((r for r in pool.leak_reports() if r["thread_name"] == "forgetful-task" and r["reclaimed"]), None),
        what="the ended thread's connection reclaimed",
    )
    assert report["state"] == "thread ended"
    assert pool.stats()["leaks_reclaimed"] == before + 1
    wait_until(lambda: pool.stats()["in_use"] == 0, what="the reclaimed connection gone")


def test_a_connection_shared_through_djangos_api_outlives_its_thread(project):
    Item = project
    pool = _wrapper().pool
    shared: dict[str, Any] = {}

    def task() -> None:
        wrapper = _wrapper()
        wrapper.inc_thread_sharing()
        shared["pid"] = Item.objects.count() and wrapper.connection.info.backend_pid
        shared["wrapper"] = wrapper

    t = _in_thread(task, name="sharing-task")
    t.join(JOIN)
    assert not t.is_alive()
    wrapper = shared["wrapper"]
    # well past the report and the reclaim of an ended thread's connection (see the test above)
    wait_until(lambda: any(r["thread_name"] == "sharing-task" for r in pool.leak_reports()),
               what="the long borrow reported")  # fmt: skip
    threading.Event().wait(4 * LEAK)
    report = next(r for r in pool.leak_reports() if r["thread_name"] == "sharing-task")
    assert not report["reclaimed"] and "not reclaimed" in report["summary"]
    with wrapper.cursor() as cur:  # still this thread's to use: nobody took it away
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] == shared["pid"]
    wrapper.close()
    wrapper.dec_thread_sharing()
    assert pool.stats()["in_use"] == 0


def test_djangos_server_side_cursors_are_closed_when_the_connection_goes_back(project):
    Item = project
    one = _wrapper("one")  # a pool of one: the next borrow gets the same connection
    rows = Item.objects.using("one").order_by("id").iterator(chunk_size=2)
    assert next(rows).name == "item-0"
    with one.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_cursors WHERE name LIKE '_django_curs_%%'")
        assert cur.fetchone()[0] == 1  # the iterator's WITH HOLD cursor (autocommit)
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    one.close()  # back to the pool, the iterator unfinished
    with one.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), (SELECT count(*) FROM pg_cursors)")
        assert cur.fetchone() == (pid, 0)
    one.close()
    # Django closes its cursor again when the iterator goes: already closed, a no-op, not an
    # error about the connection raised inside a garbage collection
    raised: list[Any] = []
    old_hook, sys.unraisablehook = sys.unraisablehook, raised.append
    try:
        rows.close()
        del rows
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert not raised, [r.exc_value for r in raised]


def test_a_pool_timeout_is_a_503_with_retry_after_and_nothing_about_the_database(project, pg):
    hold = threading.Event()
    holding = threading.Event()

    def holder() -> None:
        with _wrapper("one").cursor() as cur:
            cur.execute("SELECT 1")
        holding.set()
        hold.wait(JOIN)
        _wrapper("one").close()

    t = _in_thread(holder, name="holder")
    try:
        assert holding.wait(SETTLE)
        status, headers, raw = _get("/one")
    finally:
        hold.set()
        t.join(JOIN)
    assert not t.is_alive()
    assert status == 503 and headers["Retry-After"] == "3"
    assert json.loads(raw)["error"] == "database busy"
    url, body = urlsplit(pg.url), raw.decode()
    for secret in (url.hostname, str(url.port), url.username, "django-one", "psycopg"):
        assert secret not in body
    assert _get("/one")[0] == 200  # free again


def test_connection_scope_gives_a_tasks_connections_back(project):
    from threadpool_db.django import connection_scope

    Item = project
    pool = _wrapper().pool
    seen: dict[str, int] = {}

    @connection_scope
    def task() -> None:
        Item.objects.count()
        seen["inside"] = pool.stats()["in_use"]

    def in_a_block() -> None:
        from django.db import transaction

        with connection_scope():
            with transaction.atomic():
                Item.objects.count()
                with connection_scope():  # nested in atomic(): must not take the connection away
                    pass
                seen["atomic"] = Item.objects.count()

    for fn, name in ((task, "scoped-task"), (in_a_block, "scoped-atomic")):
        t = _in_thread(fn, name=name)
        t.join(JOIN)
        assert not t.is_alive()
    assert seen["inside"] >= 1 and seen["atomic"] == 10
    assert pool.stats()["in_use"] == 0  # both threads ended having given theirs back
    threading.Event().wait(2 * LEAK)  # nothing of theirs left to report
    assert not [r for r in pool.leak_reports() if r["thread_name"].startswith("scoped-")]


def test_a_forked_child_never_uses_its_parents_connection(project):
    Item = project
    wrapper = _wrapper("default")
    parent_pid = Item.objects.count() and wrapper.connection.info.backend_pid

    def child() -> dict[str, Any]:
        count = Item.objects.count()  # the inherited wrapper borrows from the child's pool
        return {"count": count, "pid": _wrapper().connection.info.backend_pid}

    out = in_child(child)
    assert out["count"] == 10 and out["pid"] != parent_pid
    with wrapper.cursor() as cur:  # the child did not touch the parent's session
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] == parent_pid
    wrapper.close()


def test_a_time_zone_change_closes_the_pool_under_a_borrowed_connection(project):
    """Django's setting_changed handler calls ensure_timezone(), which closes the pool while
    this thread still holds a connection of it: that connection must go back quietly (it is
    closed), and the next borrow comes from a new pool in the new time zone."""
    from django.test.utils import override_settings

    Item = project
    wrapper = _wrapper()
    first = wrapper.pool
    Item.objects.count()  # borrowed, and kept across the change
    with override_settings(TIME_ZONE="Africa/Nairobi", USE_TZ=False):  # (with USE_TZ the session is UTC)
        assert first.closed and wrapper.pool is not first
        wrapper.close()  # Django's _close: putconn into the closed pool
        with wrapper.cursor() as cur:
            cur.execute("SHOW TIMEZONE")
            assert cur.fetchone()[0] == "Africa/Nairobi"
        wrapper.close()
    assert Item.objects.count() == 10
    wrapper.close()
    assert first.stats()["size"] == 0


def test_release_after_query_gives_the_connection_back_between_queries(project):
    from django.db import transaction

    Item = project
    wrapper = _wrapper("release")
    pool = wrapper.pool
    assert Item.objects.using("release").count() == 10
    assert wrapper.connection is None and pool.stats()["in_use"] == 0
    with transaction.atomic(using="release"):
        Item.objects.using("release").create(name="in-block")
        assert pool.stats()["in_use"] == 1  # held for the whole block
        assert Item.objects.using("release").filter(name="in-block").count() == 1
        assert pool.stats()["in_use"] == 1
    assert wrapper.connection is None and pool.stats()["in_use"] == 0  # back at the block's end
    Item.objects.using("release").filter(name="in-block").delete()
    rows = Item.objects.using("release").order_by("id").iterator(chunk_size=2)
    assert next(rows).name == "item-0"
    assert pool.stats()["in_use"] == 1  # its server-side cursor is still open
    assert len(list(rows)) == 9
    assert pool.stats()["in_use"] == 0


def test_release_after_query_serves_more_threads_than_connections(project):
    Item = project
    pool = _wrapper("release").pool  # max_size 2, timeout 5 s
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                Item.objects.using("release").count()
                threading.Event().wait(0.05)  # between queries the thread holds nothing
        except BaseException as e:
            errors.append(e)

    threads = [_in_thread(worker, name=f"release-{i}") for i in range(6)]
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads) and not errors
    assert pool.stats()["in_use"] == 0 and pool.stats()["size"] <= 2


def test_each_alias_has_its_pool_for_metrics_and_the_advisor(project):
    from prometheus_client import CollectorRegistry

    from threadpool_db.django import pools
    from threadpool_db.metrics import PoolMetrics

    Item = project
    registry = CollectorRegistry()
    exporters = [PoolMetrics(pool, registry=registry, interval=60) for pool in pools().values()]
    try:
        Item.objects.count()
        _wrapper().close()
        for e in exporters:
            e.update()
        created = registry.get_sample_value("threadpool_db_connections_created_total", {"pool": "django-default"})
        assert created is not None and created >= 1
        advice = pools()["default"].advise(workers=2, query_server=False)
        assert advice and isinstance(advice, dict)
    finally:
        for e in exporters:
            e.close()


def test_open_pools_fails_fast_with_the_cause_and_no_password(project, pg):
    from django.db import connections

    from threadpool_db import PoolConfigError
    from threadpool_db.django import open_pools

    bad = connections["default"].copy("tpdb_wrong_password")
    bad.settings_dict = {**bad.settings_dict, "PASSWORD": "not-the-password", "OPTIONS": {"pool": {"min_size": 1}}}
    connections["tpdb_wrong_password"] = bad
    settings_before = dict(connections.settings)
    connections.settings["tpdb_wrong_password"] = bad.settings_dict
    try:
        started = time.monotonic()
        with pytest.raises(PoolConfigError, match="password authentication failed") as caught:
            open_pools(timeout=SETTLE)
        assert time.monotonic() - started < SETTLE  # at once, not after the timeout
        assert "not-the-password" not in str(caught.value)
    finally:
        bad.close_pool()
        del connections["tpdb_wrong_password"]
        connections.settings.clear()
        connections.settings.update(settings_before)
