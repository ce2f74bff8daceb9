"""Test helpers shared by the test modules."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from .timing import JOIN, LOCK_TIMEOUT, POLL, SETTLE, STATEMENT_TIMEOUT, TIMEOUT_SLACK

# Every connection a test opens on its own (never the pools under test) gives up on a lock or
# a hung statement quickly: a transaction leaked by one test then fails the next at once.
PG_OPTIONS = f"-c lock_timeout={LOCK_TIMEOUT} -c statement_timeout={STATEMENT_TIMEOUT}"


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """psycopg.connect with the tests' lock and statement timeouts."""
    return psycopg.connect(url, options=PG_OPTIONS, **kwargs)


def require(what: str, found: bool, install: str) -> None:
    """A test that needs an outside tool (pgbouncer, chromium, playwright): under CI a missing
    one fails the run, saying what to install; elsewhere the test is skipped, saying the same."""
    if found:
        return
    msg = f"{what} is missing: {install}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs {msg} (.ci/run installs it when it can)", pytrace=False)
    pytest.skip(msg)


def require_native() -> Any:
    """The C borrow-site recorder (threadpool_db/_sight.c), or a skip (a failure under CI)."""
    from threadpool_db import leaks

    require("the C borrow-site recorder (threadpool_db/_sight.c)", leaks.NATIVE is not None,
            "install gcc and the Python headers, then reinstall threadpool_db")  # fmt: skip
    return leaks.NATIVE


def have_command(name: str) -> bool:
    return shutil.which(name) is not None


def wait_until(pred: Callable[[], Any], timeout: float = SETTLE, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)


def run_threads(n: int, target: Callable[[int], None], timeout: float = JOIN) -> list[BaseException]:
    """Run ``target(i)`` in n threads; join with a timeout, assert all finished, return errors."""
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # collected and asserted by the caller
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,), name=f"t{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads did not finish within {timeout} s: {alive}"
    return errors


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on a fresh autocommit connection (never from a pool under test)."""
    with connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def backends(url: str, app_name: str) -> list[int]:
    return [r[0] for r in sql(url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app_name,))]


def in_child(fn: Callable[[], Any], timeout: float = JOIN) -> Any:
    """Run ``fn`` in a forked child; return what it returned (JSON-able), or fail with what
    it raised. The child leaves with os._exit: no atexit, no finalizer of the parent's."""
    import json
    import select

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            try:
                out = {"ok": fn()}
            except BaseException as e:
                out = {"error": f"{type(e).__name__}: {e}"}
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    buf = b""
    eof = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([r], [], [], 0.5)[0]:
            chunk = os.read(r, 65536)
            if not chunk:
                eof = True  # the child's end closed: it is exiting
                break
            buf += chunk
    os.close(r)
    if not eof:  # past its deadline and still running: it goes, so the run leaves nothing
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        raise AssertionError(f"child still running after {timeout:g} s: killed; it said {buf!r}")
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed: {buf!r}"
    out = json.loads(buf)
    assert "error" not in out, out["error"]
    return out["ok"]


@contextlib.contextmanager
def interrupt_after(seconds: float, handler: Callable[[], None] | None = None) -> Any:
    """SIGALRM in ``seconds`` in the main thread: run ``handler`` (if any), then raise
    KeyboardInterrupt there, as Ctrl-C would."""
    import signal

    def fire(signum: int, frame: Any) -> None:
        if handler is not None:
            handler()
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, fire)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def line_of(fn: Callable[..., Any], marker: str) -> int:
    """The line number of the first line of ``fn``'s source that contains ``marker``: where a
    test's borrow is, so a report can be checked against it."""
    src, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(src) if marker in line)


@contextlib.contextmanager
def times_out(timeout: float, exc: type[BaseException] | None = None, match: str | None = None) -> Any:
    """``pytest.raises(PoolTimeout)`` that also bounds the time from both sides: not before
    ``timeout`` (less 10%), and not much after it. A per-call timeout that the pool ignored in
    favour of its own default (30 s) fails here rather than passing slowly."""
    from threadpool_db import PoolTimeout

    t0 = time.monotonic()
    with pytest.raises(exc or PoolTimeout, match=match) as info:
        yield info
    elapsed = time.monotonic() - t0
    assert 0.9 * timeout <= elapsed < timeout + TIMEOUT_SLACK, f"timed out after {elapsed:.2f} s, timeout={timeout} s"


RUN_TAG = "TPDB_TEST_RUN"


def started_by_this_test() -> dict[str, str]:
    """An environment entry to give the processes a test starts: every descendant inherits
    it, so still_running() finds exactly those (never another clone's demo or test run)."""
    import uuid

    return {RUN_TAG: uuid.uuid4().hex}


def still_running(tag: dict[str, str]) -> list[str]:
    """The live processes that carry ``tag`` in their environment (read from /proc)."""
    marker = f"{RUN_TAG}={tag[RUN_TAG]}".encode()
    found = []
    for d in os.scandir("/proc"):
        if not d.name.isdigit():
            continue
        try:
            with open(f"/proc/{d.name}/environ", "rb") as f:
                if marker not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{d.name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d.name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue  # a zombie is gone already; only its parent has not reaped it
        except OSError:
            continue  # ended meanwhile, or not ours to read
        found.append(f"{d.name}: {cmd[:120]}")
    return found


def parse_python(source: str) -> Any:
    """ast.parse, once more if it fails with "AST constructor recursion depth mismatch": a
    CPython 3.11 race (gh-106905, fixed after 3.11.7) when the GIL is released during the AST's
    construction and another thread builds one; seen once in a full run. Not about the file."""
    import ast

    try:
        return ast.parse(source)
    except SystemError:
        return ast.parse(source)
