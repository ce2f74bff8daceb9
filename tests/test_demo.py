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
