"""Run the demo app under gunicorn: ``make serve`` (foreground), and ``run_gunicorn()``, the
context manager that the tests and ``load.compare`` use to start and always stop it."""

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
from typing import IO

from threadpool_db.testing import EmbeddedPostgres, database_url, free_port

HERE = Path(__file__).resolve().parent


def gunicorn_cmd(extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", str(HERE / "gunicorn.conf.py"), *(extra or []),
            "demo_app:create_app()"]  # fmt: skip


@contextlib.contextmanager
def run_gunicorn(
    database_url: str,
    *extra: str,
    workers: int = 2,
    threads: int = 8,
    max_size: int = 4,
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
    port: int | None = None,
) -> Iterator[str]:
    """Start gunicorn on a free 127.0.0.1 port, wait until it answers, yield its base URL, and
    stop it (SIGTERM, then SIGKILL of its process group) however the block ends."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    penv = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_THREADS": str(threads),
        "TPDB_MAX_SIZE": str(max_size),
        "GUNICORN_LOGLEVEL": "warning",
        **(env or {}),
    }
    proc = subprocess.Popen(gunicorn_cmd(list(extra)), env=penv, cwd=HERE.parent, start_new_session=True,
                            stdout=log, stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}")
            try:
                urllib.request.urlopen(base + "/ping", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not answer /ping within 60 s") from None
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


def main() -> None:
    url = database_url()
    server = None
    if not url:
        server = EmbeddedPostgres({"max_connections": int(os.environ.get("TPDB_MAX_CONNECTIONS", "100"))}).start()
        url = server.url()
        print(f"embedded PostgreSQL on 127.0.0.1:{server.port}")
    env = {**os.environ, "DATABASE_URL": url}
    print(f"dashboard: http://{env.get('GUNICORN_BIND', '127.0.0.1:8000')}/  (Ctrl-C stops everything)")
    try:
        subprocess.run(gunicorn_cmd(sys.argv[1:]), env=env, cwd=HERE.parent, check=False)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
