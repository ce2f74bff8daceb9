"""Start and stop the demo app under a real gunicorn, on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from threadpool_db.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def gunicorn(database_url: str, *extra: str, workers: int = 2, threads: int = 8, max_size: int = 4,
             stats_dir: str | None = None, env: dict[str, str] | None = None) -> Iterator[str]:  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    penv = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_THREADS": str(threads),
        "TPDB_MAX_SIZE": str(max_size),
        "GUNICORN_LOGLEVEL": "warning",
        **({"TPDB_STATS_DIR": stats_dir} if stats_dir else {}),
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "demo_app" / "gunicorn.conf.py"), *extra,
           "demo_app:create_app()"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=penv, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}")
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not answer /healthz within 60 s") from None
                time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
