"""Each gunicorn worker has its own pool, so the dashboard needs all of them, whichever worker
answers the poll. Each worker writes its stats to ``<stats_dir>/worker-<pid>.json`` twice a
second (write to a temp file, then rename: readers never see half a file); any worker reads the
whole directory. A shared directory needs no extra process and no extra dependency, and it
survives a worker being replaced (stale files age out)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from threadpool_db import ConnectionPool

STALE_AFTER = 5.0
INTERVAL = 0.5


def start_publisher(stats_dir: str, get_pool: Any) -> None:
    """Start (once per process) the thread that writes this worker's stats."""
    Path(stats_dir).mkdir(parents=True, exist_ok=True)

    def loop() -> None:
        pid = os.getpid()
        target = Path(stats_dir) / f"worker-{pid}.json"
        tmp = Path(stats_dir) / f".worker-{pid}.tmp"
        while True:
            pool: ConnectionPool | None = get_pool()
            if pool is not None and not pool.closed:
                doc = {"pid": pid, "ts": time.time(), "stats": pool.stats(), "leaks": pool.leak_reports()[-5:],
                       "backend_pids": pool.backend_pids()}  # fmt: skip
                tmp.write_text(json.dumps(doc))
                os.replace(tmp, target)
            time.sleep(INTERVAL)

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
