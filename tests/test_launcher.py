"""The launchers a new user runs first: ``python -m threadpool_db.devdb`` and ``make serve``,
from a private (0700) folder as root, as a non-root user, and however they are stopped."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from threadpool_db import embedded
from threadpool_db.embedded import find_bindir, free_port

from .helpers import connect, wait_until
from .timing import JOIN, SETTLE

ROOT = Path(__file__).resolve().parent.parent


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _read_until(proc: subprocess.Popen[str], pattern: str, stream: str = "stdout") -> re.Match[str]:
    deadline = time.monotonic() + 60
    pipe = getattr(proc, stream)
    seen = ""
    while time.monotonic() < deadline:
        line = pipe.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen += line
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"no line matching {pattern!r} from the launcher; it said: {seen!r}")


def test_devdb_runs_from_a_private_folder_and_cleans_up_on_ctrl_c(tmp_path):
    """A clone in a 0700 folder (mktemp -d, /root/p): as root the server's user cannot reach
    the binaries there, so the launcher must copy them to a readable place."""
    private = Path(tempfile.mkdtemp(prefix="tpdb-private-"))
    os.chmod(private, 0o700)
    # the wheel's layout, as pip puts it in a venv: <site>/<package>/<install>/bin, <site>/<package>.libs
    package = find_bindir().parent.parent
    install = private / "site" / package.name / find_bindir().parent.name
    shutil.copytree(find_bindir().parent, install, symlinks=True)
    for libs in package.parent.glob(f"{package.name}*.libs"):
        shutil.copytree(libs, private / "site" / libs.name, symlinks=True)
    # One public copy per wheel version, shared by every venv and run (this private install's
    # and the venv's alike): not one per install, which left 40 MB in /tmp per clone.
    assert embedded._wheel_stamp(install / "bin") == embedded._wheel_stamp(find_bindir())
    public_copy = (
        Path(tempfile.gettempdir()) / f"threadpool_db-pg-{install.name}-{embedded._wheel_stamp(find_bindir())}"
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["THREADPOOL_DB_PG_BINDIR"] = str(install / "bin")
    proc = subprocess.Popen([sys.executable, "-m", "threadpool_db.devdb", "--max-connections", "20"],
                            cwd=private, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        url = _read_until(proc, r"^export DATABASE_URL='(.+)'$").group(1)
        datadir = Path(_read_until(proc, r"data in (\S+);", "stderr").group(1))
        with connect(url) as conn:
            assert conn.execute("SHOW max_connections").fetchone() == ("20",)
            assert conn.execute("SELECT current_user").fetchone() == ("app",)
        assert datadir.exists()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(JOIN) == 0
        wait_until(lambda: not datadir.exists(), what="the data folder to be deleted")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert not _listening(port)
        if os.geteuid() == 0:  # the fallback did run: binaries copied where tpdb can read them
            assert (public_copy / package.name / install.name / "bin" / "pg_ctl").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(private, ignore_errors=True)  # the public copy stays: other runs share it


def test_embedded_server_runs_as_a_non_root_user(tmp_path):
    """As a non-root user the launcher runs the server as that user. Run as root, this test
    starts a Python that loads what it needs and then drops to 'nobody' for good."""
    if os.geteuid() != 0:
        with embedded.EmbeddedPostgres() as pg, connect(pg.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        return
    user = embedded._service_user()
    assert user is not None
    bindir = embedded._public_bindir(find_bindir(), user)  # readable by any user
    home = Path(tempfile.mkdtemp(prefix="tpdb-nobody-"))
    os.chown(home, 65534, 65534)
    os.chmod(home, 0o700)
    code = r"""
import os, sys, tempfile
import psycopg
from psycopg import sql  # loaded now: once we are 'nobody' the venv may be out of reach
from threadpool_db.embedded import EmbeddedPostgres
os.setgroups([]); os.setgid(65534); os.setuid(65534)
assert os.geteuid() == 65534
tempfile.tempdir = sys.argv[1]
with EmbeddedPostgres() as pg:
    with psycopg.connect(pg.url()) as conn:
        print("ok", conn.execute("SELECT current_user").fetchone()[0], pg.datadir)
"""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["THREADPOOL_DB_PG_BINDIR"] = str(bindir)
    try:
        out = subprocess.run([sys.executable, "-c", code, str(home)], env=env, cwd="/", capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        word, role, datadir = out.stdout.split()
        assert (word, role) == ("ok", "app")
        assert datadir.startswith(str(home)) and not Path(datadir).exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=["term", "hup", "kill"])
def test_make_serve_stops_gunicorn_and_the_server_however_it_ends(sig):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", GUNICORN_THREADS="2",
               GUNICORN_LOGLEVEL="warning", TPDB_MAX_CONNECTIONS="20")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "demo_app.serve"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        m = _read_until(proc, r"embedded PostgreSQL (\d+) on 127.0.0.1 .*data in (\S+)")
        pg_port, datadir = int(m.group(1)), Path(m.group(2))

        def answers() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200
            except OSError:
                return False

        shared = Path(_read_until(proc, r"workers share (\S+)").group(1))
        assert shared.is_dir()
        wait_until(answers, timeout=60, what="gunicorn to answer")
        proc.send_signal(sig)
        proc.wait(JOIN)
        wait_until(lambda: not answers() and not _listening(port), timeout=JOIN, what="gunicorn to stop")
        wait_until(lambda: not _listening(pg_port), timeout=JOIN, what="PostgreSQL to stop")
        wait_until(lambda: not datadir.exists(), timeout=SETTLE, what="the data folder to go")
        # gunicorn's shared folder too, even when the launcher was killed (gunicorn's master
        # removes it on its way out); the PostgreSQL copy is shared across runs by design
        wait_until(lambda: not shared.exists(), timeout=SETTLE, what="the gunicorn run's folder to go")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
