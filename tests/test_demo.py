"""End to end: the demo app under real gunicorn gthread workers, against the real server."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request

import pytest

from demo_app.app import POOLED_APP

from .gunicorn_proc import gunicorn
from .helpers import run_threads, sql
from .timing import SETTLE

WORKERS, MAX_SIZE = 2, 4


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _pooled_backends(admin_url: str) -> int:
    rows = sql(admin_url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (POOLED_APP,))
    return rows[0][0]


@pytest.mark.parametrize("preload", [False, True], ids=["fork", "preload"])
def test_gunicorn_workers_stay_within_their_pools_and_never_share_a_socket(pg, preload):
    extra = ["--preload"] if preload else []
    peak = 0
    stop = threading.Event()
    with gunicorn(pg.url, *extra, workers=WORKERS, max_size=MAX_SIZE) as base:

        def sampler() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _pooled_backends(pg.admin_url))
                time.sleep(0.02)

        s = threading.Thread(target=sampler, daemon=True)
        s.start()
        statuses: list[int] = []

        def client(i: int) -> None:
            rnd = random.Random(i)
            for _ in range(12):
                family = "pooled" if rnd.random() < 0.8 else "per-request"
                op = rnd.choice(["read", "read", "read", "write", "slow"])
                code, _ = _get(f"{base}/{family}/{op}")
                statuses.append(code)

        try:
            assert run_threads(24, client) == []
        finally:
            stop.set()
            s.join(30)
        assert statuses.count(200) == len(statuses) == 24 * 12
        assert 1 <= peak <= WORKERS * MAX_SIZE

        # every worker's backends are its own: no socket crossed a fork
        seen: dict[int, set[int]] = {}
        for _ in range(200):
            code, doc = _get(f"{base}/api/worker")
            assert code == 200
            seen.setdefault(doc["pid"], set()).update(doc["backend_pids"])
            if len(seen) == WORKERS and all(seen.values()):
                break
        assert len(seen) == WORKERS, f"only saw workers {list(seen)}"
        a, b = seen.values()
        assert a and b and not (a & b)
        assert all(len(v) <= MAX_SIZE for v in seen.values())
    # gunicorn stopped: its pools closed their connections
    deadline = time.monotonic() + 10
    while _pooled_backends(pg.admin_url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _pooled_backends(pg.admin_url) == 0


def test_pool_exhaustion_in_a_worker_answers_503_with_retry_after(pg):
    env = {"TPDB_POOL_TIMEOUT": "0.2"}
    with gunicorn(pg.url, workers=1, threads=8, max_size=1, env=env) as base:
        # the worker's pool is made on first use and connects in the background: wait until it
        # serves, so what follows measures exhaustion, not start-up
        deadline = time.monotonic() + SETTLE
        while _get(f"{base}/pooled/read")[0] != 200:
            assert time.monotonic() < deadline, "the worker's pool never served a request"
            time.sleep(0.05)
        codes: list[int] = []
        headers: list[str | None] = []

        def client(i: int) -> None:
            for _ in range(3):
                try:
                    with urllib.request.urlopen(f"{base}/pooled/slow", timeout=30) as r:
                        codes.append(r.status)
                except urllib.error.HTTPError as e:
                    codes.append(e.code)
                    headers.append(e.headers.get("Retry-After"))

        assert run_threads(8, client) == []
        assert 200 in codes and 503 in codes
        assert set(codes) <= {200, 503}
        assert all(h == "1" for h in headers)


def test_preload_master_keeps_no_backend_and_advice_counts_gunicorns_workers(pg):
    """gunicorn --preload with an app factory that creates a table through the pool: the pool
    is made in the master; at the fork the master closes its idle connection, so only the
    workers hold backends. /pool/stats names each worker, and its advice takes gunicorn's own
    worker count (-w 2) over WEB_CONCURRENCY (1 here)."""
    from .preload_app import APP_NAME

    def held() -> int:
        return sql(pg.admin_url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                   (APP_NAME,))[0][0]  # fmt: skip

    with gunicorn(pg.url, "--preload", "-w", "2", workers=1, app="tests.preload_app:create_app()") as base:
        pids = set()
        for _ in range(200):
            code, doc = _get(f"{base}/pool/stats")
            assert code == 200 and doc["name"] == "flask-tests.preload_app"
            pids.add(doc["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2
        code, doc = _get(f"{base}/pool/stats")  # both workers are up: gunicorn's count is 2
        assert doc["advice"]["workers"] == 2, doc["advice"]
        # min_size=1 per worker: 2 backends. Before the fix the master kept a third one.
        deadline = time.monotonic() + 10
        while held() != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert held() == 2
        # and the master does not refill it: several of its housekeeping ticks pass meanwhile
        for _ in range(10):
            time.sleep(0.1)
            assert held() == 2


def test_a_refused_per_request_connection_tells_the_client_nothing_of_the_database(monkeypatch, pg, tmp_path):
    """The thread-per-request route answers 503 with the SQLSTATE and our own words: no host,
    port, role or driver text, which name the database."""
    from demo_app import create_app
    from threadpool_db.embedded import free_port

    port = free_port()
    monkeypatch.setenv("DATABASE_URL", pg.url)
    monkeypatch.setenv("TPDB_STATS_DIR", str(tmp_path))
    app = create_app()
    app.config["DATABASE_URL"] = f"postgresql://app:pw@127.0.0.1:{port}/app"  # nothing listens there
    r = app.test_client().get("/per-request/read")
    assert r.status_code == 503
    assert r.get_json() == {"error": "database refused the connection", "sqlstate": "08006",
                            "message": "the database could not be reached"}  # fmt: skip
    app.extensions["threadpool_db"].close()


def test_the_refusal_words_are_ours_not_the_servers():
    import psycopg

    from demo_app.app import refusal

    said = 'connection to server at "10.1.2.3", port 6432 failed: FATAL:  sorry, too many clients already'
    assert refusal(psycopg.OperationalError(said)) == ("53300", "too many clients")
    reserved = ('connection to server at "db.internal" (10.1.2.3), port 5432 failed: FATAL:  remaining connection '
                'slots are reserved for roles with the SUPERUSER attribute')  # fmt: skip
    assert refusal(psycopg.OperationalError(reserved)) == ("53300", "only reserved connection slots left")


def test_a_gunicorn_run_leaves_no_folder_behind(pg, tmp_path, monkeypatch):
    """Prometheus's multiprocess files and the dashboard's stats live in one folder per run,
    removed when it ends: launched by run_gunicorn, and gunicorn started by hand."""
    import os
    import subprocess
    import tempfile

    from demo_app.serve import gunicorn_cmd, stop_process_group
    from threadpool_db.embedded import free_port

    from .helpers import wait_until

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # this process's temporary folders
    monkeypatch.setenv("TMPDIR", str(scratch))  # and gunicorn's
    for var in ("PROMETHEUS_MULTIPROC_DIR", "TPDB_STATS_DIR"):
        monkeypatch.delenv(var, raising=False)
    with gunicorn(pg.url, workers=1, threads=2, max_size=1) as base:
        assert _get(base + "/pooled/read")[0] == 200
        assert [p.name[:13] for p in scratch.iterdir()] == ["tpdb-gunicorn"]
    assert list(scratch.iterdir()) == []

    port = free_port()
    env = {**os.environ, "DATABASE_URL": pg.url, "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1",
           "GUNICORN_LOGLEVEL": "warning"}  # fmt: skip
    proc = subprocess.Popen(gunicorn_cmd(), env=env, cwd=os.path.dirname(os.path.dirname(__file__)),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: _ping(f"http://127.0.0.1:{port}"), timeout=60, what="gunicorn to answer")
        assert _get(f"http://127.0.0.1:{port}/pooled/read")[0] == 200
        assert [p.name[:13] for p in scratch.iterdir()] == ["tpdb-gunicorn"]
    finally:
        stop_process_group(proc)
    assert proc.returncode == 0
    assert list(scratch.iterdir()) == []


def _ping(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/ping", timeout=2):
            return True
    except OSError:
        return False
