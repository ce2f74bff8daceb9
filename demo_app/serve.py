"""Run the demo app under gunicorn: ``make serve`` (foreground), and ``run_gunicorn()``, the
context manager that the tests and ``load.compare`` use to start and always stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from threadpool_db.embedded import Stopped, database, free_port, stop_on_signals

HERE = Path(__file__).resolve().parent


DEMO_APP = "demo_app:create_app()"


def gunicorn_cmd(extra: list[str] | None = None, app: str = DEMO_APP) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", str(HERE / "gunicorn.conf.py"), *(extra or []), app]


@contextlib.contextmanager
def shared_dirs(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The folders a gunicorn run's workers share (Prometheus's multiprocess files, the
    dashboard's stats), unless ``env`` names them: made here, removed however the run ends."""
    with tempfile.TemporaryDirectory(prefix="tpdb-gunicorn-") as run_dir:
        prometheus = os.path.join(run_dir, "prometheus")
        os.mkdir(prometheus)
        # TPDB_RUN_DIR: gunicorn's master removes it too when it exits, for a launcher that is
        # killed (SIGKILL: no finally runs) while gunicorn gets its parent-death signal
        yield {"PROMETHEUS_MULTIPROC_DIR": prometheus, "TPDB_STATS_DIR": os.path.join(run_dir, "stats"),
               "TPDB_RUN_DIR": run_dir, **env}  # fmt: skip


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
    app: str = DEMO_APP,
) -> Iterator[str]:
    """Start gunicorn on a free 127.0.0.1 port, wait until it answers, yield its base URL, and
    stop it (SIGTERM, then SIGKILL of its process group) however the block ends."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    with shared_dirs(env or {}) as own:
        penv = {
            **os.environ,
            "DATABASE_URL": database_url,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
            "TPDB_MAX_SIZE": str(max_size),
            "GUNICORN_LOGLEVEL": "warning",
            **own,
        }
        proc = subprocess.Popen(gunicorn_cmd(list(extra), app), env=penv, cwd=HERE.parent, start_new_session=True,
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
            stop_process_group(proc)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM a child that leads its own process group; SIGKILL the group after ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def main() -> int:
    """``make serve``: the embedded server (unless DATABASE_URL is set) and gunicorn in the
    foreground. Ctrl-C, SIGTERM or SIGHUP stop both and delete the data folder; a SIGKILL of
    this process takes gunicorn down too (parent-death signal), and the server's guardian
    stops the server."""
    proc: subprocess.Popen[bytes] | None = None
    try:
        with stop_on_signals(), database({"max_connections": int(os.environ.get("TPDB_MAX_CONNECTIONS", "100"))},
                                         say=print) as (url, _):  # fmt: skip
            print(f"dashboard: http://{os.environ.get('GUNICORN_BIND', '127.0.0.1:8000')}/  (Ctrl-C stops "
                  "everything)", flush=True)  # fmt: skip
            with shared_dirs({}) as own:
                env = {**os.environ, "DATABASE_URL": url, **own}
                print(f"the workers share {own['TPDB_RUN_DIR']} (removed at the end)", flush=True)
                proc = subprocess.Popen(gunicorn_cmd(sys.argv[1:]), env=env, cwd=HERE.parent, start_new_session=True,
                                        preexec_fn=_die_with_parent)  # fmt: skip
                try:
                    return proc.wait()
                finally:
                    stop_process_group(proc)
    except (KeyboardInterrupt, Stopped):
        return 0


if __name__ == "__main__":
    sys.exit(main())
