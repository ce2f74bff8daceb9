"""Smoke runs of the benchmarks: every row is produced and the JSON is well formed.
No timing is asserted: speed lives in the benchmark output, not in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = {"threadpool_db", "psycopg_pool", "sqlalchemy QueuePool", "DBUtils PooledDB", "psycopg2 ThreadedConnectionPool"}
WAITING = PEERS - {"psycopg2 ThreadedConnectionPool"}


def test_bench_pools_quick_run_has_every_peer(pg, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "load.bench_pools", "--quick", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": pg.url}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["cycle_us"]) == PEERS | {"lock+deque floor", "threadpool_db, leak detection off"}
    assert set(res["idiom_us"]) == WAITING | {"threadpool_db getconn/putconn"}
    assert "the idiom" in proc.stdout
    assert set(res["otel_us"]) == {"not instrumented", "API no-op", "SDK, a reader attached"}
    assert "OpenTelemetry metrics" in proc.stdout
    assert set(res["sqlalchemy"]["cycle_us"]) == {"QueuePool", "FairQueuePool", "FairQueuePool, leak detection off"}
    assert set(res["sqlalchemy"]["contention"]) == {"QueuePool", "FairQueuePool"}
    assert all(r["hung"] == 0 for r in res["sqlalchemy"]["contention"].values())
    assert set(res["statement_us"]) == PEERS
    assert set(res["statement_autocommit_us"]) == PEERS
    assert set(res["contention"]) == WAITING | {"Semaphore(8) ceiling"}
    assert set(res["spike"]) == WAITING
    modes = {"no detection", "site only", "sampled", "full"}
    assert set(res["stack_capture_us"]) == modes
    assert set(res["stack_capture_pure_us"]) == modes  # measured in a child with the C recorder off
    assert res["recorder"] in ("C", "pure-Python")
    assert "the pure-Python recorder" in proc.stdout
    for r in res["contention"].values():
        assert r["hung"] == 0 and r["ops_per_s"] > 0
    for r in res["spike"].values():
        assert r["hung"] == 0 and r["served"] + r["timeouts"] == 200
    assert all(v > 0 for v in res["cycle_us"].values())
    for name in PEERS:
        assert name in proc.stdout
    assert res["versions"]["psycopg-pool"] != "missing"
