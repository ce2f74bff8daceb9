"""Soak (``make soak``; not in ``make test``): 128 threads for 10 minutes while faults hit the
server every ~20 s. Threads, open descriptors and RSS must stay flat after warm-up, and the pool
must end with nothing lost. TPDB_SOAK_SECONDS shortens or lengthens it."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from pathlib import Path

import psycopg
import pytest

from threadpool_db import ConnectionPool, PoolTimeout

from ..faults.proxy import FaultProxy
from ..helpers import sql, wait_until
from ..timing import JOIN, SETTLE

pytestmark = pytest.mark.soak
logger = logging.getLogger("tests.soak")
DURATION = float(os.environ.get("TPDB_SOAK_SECONDS", "600"))
THREADS = 128


def _footprint() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"threads": threading.active_count(), "fds": len(os.listdir("/proc/self/fd")), "rss_mb": rss_kb / 1024}


@pytest.mark.timeout(DURATION + 300)
def test_soak_with_faults_stays_flat_and_loses_nothing(own_pg, tmp_path):
    pg = own_pg(max_connections=100)
    sql(pg.url(), "CREATE TABLE soak (id bigserial PRIMARY KEY, v int)")
    px = FaultProxy(pg.port)
    pool = ConnectionPool(px.url(pg.url()), min_size=4, max_size=16, timeout=5.0, max_idle=2.0,
                          leak_threshold=30.0, capture_stacks="sampled", connect_timeout=2.0, name="soak")  # fmt: skip
    stop = threading.Event()
    counts = {"ok": 0, "db_errors": 0, "timeouts": 0}
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        rnd = random.Random(i)
        while not stop.is_set():
            try:
                with pool.connection() as conn:
                    if rnd.random() < 0.3:
                        conn.execute("INSERT INTO soak (v) VALUES (%s)", (i,))
                    else:
                        conn.execute("SELECT count(*) FROM pg_class").fetchone()
                with lock:
                    counts["ok"] += 1
            except PoolTimeout:
                with lock:
                    counts["timeouts"] += 1
            except psycopg.OperationalError:
                with lock:
                    counts["db_errors"] += 1
                time.sleep(0.05)
            except BaseException as e:
                with lock:
                    unexpected.append(e)
                return

    faults = ["restart", "kill", "drop"]
    log: list[dict] = []
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    t0 = time.monotonic()
    try:
        pool.wait(SETTLE)
        for t in threads:
            t.start()
        warm = min(60.0, DURATION / 5)
        time.sleep(warm)
        baseline = _footprint()
        rnd = random.Random(42)
        while time.monotonic() - t0 < DURATION:
            time.sleep(min(rnd.uniform(15, 25), max(0.0, DURATION - (time.monotonic() - t0))))
            if time.monotonic() - t0 >= DURATION:
                break
            fault = rnd.choice(faults)
            if fault == "restart":
                pg.restart(stop_for=rnd.uniform(0.5, 2.0))
            elif fault == "kill":
                sql(pg.admin_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE usename = 'app' AND pid <> pg_backend_pid()")  # fmt: skip
            else:
                px.drop_all()
            log.append({"t": round(time.monotonic() - t0, 1), "fault": fault, **_footprint()})
        time.sleep(5)  # let the last fault settle before the final measure
        final = _footprint()
    finally:
        stop.set()
        for t in threads:
            t.join(JOIN)
    alive = [t for t in threads if t.is_alive()]
    wait_until(lambda: pool.stats()["in_use"] == 0, timeout=SETTLE, what="nothing in use")
    s = pool.stats()
    pool.close()
    px.close()
    report = {"duration_s": round(time.monotonic() - t0), "counts": counts, "baseline": baseline, "final": final,
              "faults": log, "pool": {k: s[k] for k in ("size", "in_use", "idle", "created", "closed",
                                                        "create_errors", "discarded_broken", "timeouts")}}  # fmt: skip
    out = Path(os.environ.get("TPDB_SOAK_REPORT", tmp_path / "soak.json"))
    out.write_text(json.dumps(report, indent=2))
    logger.warning("soak figures: %s", json.dumps(report))
    assert not alive, "worker threads hung"
    assert unexpected == [], unexpected[:3]
    assert counts["ok"] > 0 and len(log) >= 1
    assert s["in_use"] == 0 and s["size"] <= 16
    assert final["threads"] <= baseline["threads"] + 4
    assert final["fds"] <= baseline["fds"] + 20
    assert final["rss_mb"] <= baseline["rss_mb"] + 64
