"""Each gunicorn worker has its own pool, so the dashboard needs all of them, whichever worker
answers the poll. Each worker writes its stats to ``<stats_dir>/worker-<pid>.json`` twice a
second (write to a temp file, then rename: readers never see half a file); any worker reads the
whole directory. A shared directory needs no extra process and no extra dependency, and it
survives a worker being replaced (stale files age out).

What a person can read at a glance: a pool's in-use and waiting counts change hundreds of times
a second, so a snapshot each second flips between 0 and max_size. The publisher samples them
SAMPLES_PER_S times a second and keeps, per second, the peak and the mean, for the last
HISTORY_S seconds: the page shows the last minutes as soon as it opens. Once a second it also
counts the server's connections by application (through the pool, with a short timeout: a
saturated pool skips a point rather than wait), so that history is served too.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from threadpool_db import ConnectionPool

STALE_AFTER = 5.0
INTERVAL = 0.5  # seconds between two writes of a worker's file
SAMPLES_PER_S = 20
HISTORY_S = 180  # seconds of per-second points each worker keeps (the page shows 120)


def _second(samples: list[tuple[int, int, int]], t: int) -> dict[str, Any]:
    """One second's point from its (in_use, idle, waiting) samples: peak and mean of each."""
    n = len(samples)
    point: dict[str, Any] = {"t": t}
    for i, key in enumerate(("in_use", "idle", "waiting")):
        values = [s[i] for s in samples]
        point[f"{key}_peak"] = max(values)
        point[f"{key}_mean"] = round(sum(values) / n, 2)
    return point


def _server_counts(pool: ConnectionPool, apps: dict[str, str]) -> dict[str, int] | None:
    """Client backends by application (``apps``: label -> application_name), and in all."""
    try:
        with pool.connection(timeout=0.2) as conn:
            rows = dict(conn.execute("SELECT application_name, count(*) FROM pg_stat_activity "
                                     "WHERE backend_type = 'client backend' GROUP BY 1").fetchall())  # fmt: skip
    except Exception:
        return None  # busy or down: no point this second
    out = {label: int(rows.get(name, 0)) for label, name in apps.items()}
    out["total"] = int(sum(rows.values()))
    return out


def start_publisher(stats_dir: str, get_pool: Any, apps: dict[str, str] | None = None,
                    extra: Callable[[], dict[str, Any]] | None = None) -> None:  # fmt: skip
    """Start (once per process) the thread that samples this worker's pool and writes its
    stats and history. ``apps``: the server's connections to count, label -> application_name;
    ``extra()``: more fields for the worker's document."""
    Path(stats_dir).mkdir(parents=True, exist_ok=True)

    def loop() -> None:
        pid = os.getpid()
        target = Path(stats_dir) / f"worker-{pid}.json"
        tmp = Path(stats_dir) / f".worker-{pid}.tmp"
        history: deque[dict[str, Any]] = deque(maxlen=HISTORY_S)
        server: deque[dict[str, Any]] = deque(maxlen=HISTORY_S)
        samples: list[tuple[int, int, int]] = []
        second = int(time.time())
        timeouts: int | None = None
        next_write = 0.0
        while True:
            pool: ConnectionPool | None = get_pool()
            now = time.time()
            if pool is None or pool.closed:
                time.sleep(INTERVAL)
                continue
            s = pool.get_stats()  # cheap: counts under the lock, no percentiles
            samples.append((s["pool_size"] - s["pool_available"], s["pool_available"], s["requests_waiting"]))
            if int(now) != second:  # a second is complete: one point of peaks and means
                full = pool.stats()
                point = _second(samples, second)
                point["timeouts"] = full["timeouts"] - (timeouts if timeouts is not None else full["timeouts"])
                point["max_size"] = full["max_size"]
                timeouts = full["timeouts"]
                history.append(point)
                counts = _server_counts(pool, apps or {})
                if counts is not None:
                    server.append({"t": second, **counts})
                samples, second = [], int(now)
            if now >= next_write:
                doc = {"pid": pid, "ts": now, "stats": pool.stats(), "leaks": pool.leak_reports()[-5:],
                       "backend_pids": pool.backend_pids(), "history": list(history),
                       "server_history": list(server), **(extra() if extra is not None else {})}  # fmt: skip
                tmp.write_text(json.dumps(doc))
                os.replace(tmp, target)
                next_write = now + INTERVAL
            time.sleep(1.0 / SAMPLES_PER_S)

    threading.Thread(target=loop, name="tpdb-stats-publisher", daemon=True).start()


def read_all(stats_dir: str) -> list[dict[str, Any]]:
    out = []
    now = time.time()
    for p in sorted(Path(stats_dir).glob("worker-*.json")):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if now - doc.get("ts", 0) <= STALE_AFTER:
            out.append(doc)
    return out
