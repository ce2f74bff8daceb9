"""The one-file project of docs/django.md, served by gunicorn's gthread workers as the page says:
a Django view works from the docs alone, and with --preload a worker never uses the master's
connection."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from demo_app.serve import stop_process_group
from threadpool_db.embedded import free_port

pytest.importorskip("django", reason="the django extra is part of the test extra")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "django.md"


def _docs_project() -> str:
    """The page's runnable block that defines the WSGI application."""
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    return next(b for b in blocks if b.startswith("# extras: django") and "application = " in b)


@contextmanager
def _gunicorn(folder: Path, dsn: str, *extra: str) -> Iterator[str]:
    """gunicorn app:application, gthread, on a free 127.0.0.1 port, as the page's command line
    runs it; stopped (its process group) however the block ends."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "gunicorn", "app:application", "--worker-class", "gthread", "--workers", "2",
           "--threads", "4", "--bind", f"127.0.0.1:{port}", "--log-level", "warning", *extra]  # fmt: skip
    log = (folder / "gunicorn.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=folder, env={"DATABASE_URL": dsn, "PATH": "/usr/bin:/bin"},
                            stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"gunicorn exited: {(folder / 'gunicorn.log').read_text()[-3000:]}"
            try:
                urllib.request.urlopen(base + "/now", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
                time.sleep(0.2)
        yield base
    finally:
        stop_process_group(proc)
        log.close()
    assert proc.poll() is not None


def _get_many(base: str, n: int) -> list[dict]:
    def one(_: int) -> dict:
        with urllib.request.urlopen(base + "/now", timeout=30) as r:
            assert r.status == 200
            return json.loads(r.read())

    with ThreadPoolExecutor(8) as ex:
        return list(ex.map(one, range(n)))


def test_the_docs_project_serves_on_gunicorn_gthread(tmp_path, dsn):
    (tmp_path / "app.py").write_text(_docs_project())
    with _gunicorn(tmp_path, dsn) as base:
        answers = _get_many(base, 40)
    assert len(answers) == 40 and all(a["now"] and a["backend_pid"] for a in answers)
    # pooled: 2 workers x at most 8 connections each served 40 requests
    assert len({a["backend_pid"] for a in answers}) <= 16


def test_with_preload_no_worker_uses_the_masters_connection(tmp_path, dsn):
    # the page's project, plus a query at import time: with --preload the master holds a
    # connection when it forks the workers
    master_query = (
        "\nwith connection.cursor() as _cur:\n"
        "    _cur.execute('SELECT pg_backend_pid()')\n"
        "    MASTER_PID = _cur.fetchone()[0]\n"
        "open('master_pid', 'w').write(str(MASTER_PID))\n"
    )
    (tmp_path / "app.py").write_text(_docs_project() + master_query)
    with _gunicorn(tmp_path, dsn, "--preload") as base:
        answers = _get_many(base, 40)
    master = int((tmp_path / "master_pid").read_text())
    pids = {a["backend_pid"] for a in answers}
    assert len(answers) == 40 and master not in pids
