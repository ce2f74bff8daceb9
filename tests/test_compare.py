"""A short smoke run of the comparison (load.compare): files, table, bounds, cleanup."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from .helpers import started_by_this_test, still_running

ROOT = Path(__file__).resolve().parent.parent


def test_comparison_smoke_run_writes_the_report_and_stops_everything(pg, tmp_path):
    tag = started_by_this_test()
    env = {**os.environ, "DATABASE_URL": pg.url, **tag}
    workers, max_size = 2, 2
    proc = subprocess.run(
        [sys.executable, "-m", "load.compare", "--duration", "4", "--users", "12", "--spawn-rate", "12",
         "--workers", str(workers), "--threads", "6", "--max-size", str(max_size), "--recommended-duration", "3",
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out,) = list(tmp_path.iterdir())
    for name in ("report.md", "report.html", "results.json", "rps.png", "latency.png", "errors.png",
                 "server_conns.png", "pooled_stats.csv", "per-request_stats.csv",
                 "pooled_stats_history.csv"):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    for phase in ("per-request", "pooled"):
        mine = [line.split("]", 1)[1] for line in progress if line.startswith(f"[{phase:>11}]")]
        assert mine, proc.stdout
        assert sum("warming up" in line for line in mine) <= 1 and sum("stopping" in line for line in mine) <= 1
        figures = [line.split(" s ", 1)[1] for line in mine if "ok req/s" in line]
        assert all(a != b for a, b in itertools.pairwise(figures)), mine  # only what changed
        assert not any(" 0.0 ok req/s" in line for line in mine), mine  # "warming up" says it instead
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| phase | ok req/s | p50 ms | p95 ms | p99 ms | errors % | peak server conns")
    assert any(line.startswith("| per-request |") for line in table)
    assert any(line.startswith(f"| pooled, max_size {max_size} |") for line in table)
    assert any(line.startswith("| recommended, max_size ") for line in table)  # the advice, tried
    res = json.loads((out / "results.json").read_text())
    pooled = next(p for p in res["phases"] if p["mode"] == "pooled")
    per_request = next(p for p in res["phases"] if p["mode"] == "per-request")
    assert pooled["requests"] > 0 and per_request["requests"] > 0
    assert 1 <= pooled["peak_app_conns"] <= workers * max_size
    assert pooled["peak_conns"] >= pooled["peak_app_conns"]  # every client backend, not only the app's
    assert pooled["failures"] == 0
    assert res["meta"]["refusal_line"] == res["meta"]["max_connections"] - res["meta"]["reserved"]
    page = (out / "report.html").read_text()
    for heading in ("How to read it", "Failures by cause", "Sizing advisor", "recommended max_size"):
        assert heading in page, heading  # the page has what report.md has
    assert per_request["conns_opened"] > pooled["conns_opened"]
    assert still_running(tag) == []  # gunicorn, its workers, locust: all gone


def test_comparison_via_pgbouncer_keeps_backends_at_the_bouncers_pool_size(tmp_path):
    from threadpool_db.embedded import find_pgbouncer

    from .helpers import require

    require("pgbouncer", find_pgbouncer() is not None, "apt-get install pgbouncer")
    tag = started_by_this_test()
    env = {**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, **tag}  # it starts its own server
    proc = subprocess.run(
        [sys.executable, "-m", "load.compare", "--modes", "pooled", "--via-pgbouncer", "--duration", "4",
         "--users", "18", "--spawn-rate", "18", "--workers", "1", "--threads", "6", "--max-size", "3",
         "--bouncer-pool-size", "2", "--recommended-duration", "0", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out,) = list(tmp_path.iterdir())
    res = json.loads((out / "results.json").read_text())
    bounced = next(p for p in res["phases"] if p["mode"] == "pgbouncer")
    assert bounced["requests"] > 0 and bounced["failures"] == 0
    assert 1 <= bounced["peak_app_conns"] <= 2  # PostgreSQL sees the bouncer's pool, not the clients
    assert bounced["clients"] > bounced["peak_app_conns"]  # while 3 hosts x 1 worker x up to 3 clients
    assert "Via PgBouncer" in (out / "report.md").read_text()
    assert still_running(tag) == []


def test_refusals_are_counted_by_sqlstate_and_the_true_peak_reaches_the_limit(own_pg, tmp_path):
    """A server that must refuse: per-request mode against max_connections 10 (3 reserved)."""
    pg = own_pg(max_connections=10, superuser_reserved_connections=3)
    tag = started_by_this_test()
    env = {**os.environ, "DATABASE_URL": pg.admin_url, **tag}  # the sampler needs a superuser's reserved slot
    proc = subprocess.run(
        [sys.executable, "-m", "load.compare", "--modes", "per-request", "--duration", "5", "--users", "30",
         "--spawn-rate", "30", "--workers", "1", "--threads", "16", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out,) = list(tmp_path.iterdir())
    res = json.loads((out / "results.json").read_text())
    per = res["phases"][0]
    assert per["failures"] > 0
    causes = per["refusals"]
    assert causes and all(c.startswith("refused 53300: ") for c in causes), causes
    assert sum(causes.values()) == per["failures"]
    assert per["peak_conns"] >= res["meta"]["refusal_line"] == 7  # the server was full, and the chart shows it
    assert "refused 53300" in (out / "report.md").read_text()
    assert still_running(tag) == []
