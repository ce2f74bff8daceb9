"""Fork safety with a real os.fork(), the way gunicorn forks its workers."""

from __future__ import annotations

import json
import os
import select
import time

from .timing import JOIN, SETTLE


def _child_result(r: int, pid: int) -> dict:
    deadline = time.monotonic() + JOIN
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 0.5)
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed: {buf!r}"
    return json.loads(buf)


def test_child_gets_its_own_connections_and_parent_keeps_working(make_pool):
    pool = make_pool(min_size=2, max_size=2)
    held = pool.getconn()  # borrowed in the parent across the fork
    parent_pids = sorted(
        [held.info.backend_pid] + [s.pid for s in pool._all.values() if s.handle is None]
    )
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report and leave without running any atexit/finalizer
        code = 1
        try:
            os.close(r)
            out: dict = {}
            try:
                held.execute("SELECT 1")
            except Exception as e:
                out["held_error"] = type(e).__name__ + ": " + str(e)
            pool.wait(SETTLE)
            with pool.connection(timeout=SETTLE) as conn:
                out["pid"] = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            out["stats"] = {k: pool.stats()[k] for k in ("size", "in_use", "idle")}
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    out = _child_result(r, pid)
    assert out["pid"] not in parent_pids
    assert "before os.fork()" in out["held_error"]
    assert out["stats"]["size"] == 2 and out["stats"]["in_use"] == 0
    # the parent's sockets were not closed by the child: every parent connection still works
    assert held.execute("SELECT pg_backend_pid()").fetchone()[0] in parent_pids
    pool.putconn(held)
    seen = set()
    conns = [pool.getconn(timeout=SETTLE) for _ in range(2)]
    for c in conns:
        seen.add(c.execute("SELECT pg_backend_pid()").fetchone()[0])
        pool.putconn(c)
    assert seen == set(parent_pids)
    assert pool.stats()["discarded_broken"] == 0
