"""A real, silent network partition: three network namespaces (client, router, server) made by
the test, the server inside its own, the pool in a child process inside the client's, and the
router made to stop forwarding (no reset, no error: packets vanish).

Each scenario reports every call's duration, the acknowledged commits and the ledger; the test
asserts that no call blocked much past network_timeout, every getconn returned by its deadline,
the pool served again soon after the heal, no acknowledged commit was lost, and no thread was
left stuck. The short variants run in ``make test``; the 20 s cuts, with psycopg_pool measured
beside us, run in ``make chaos`` (and print the figures docs/reliability.md quotes).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from . import netns

ROOT = Path(__file__).resolve().parents[2]
GETCONN_TIMEOUT = 2.0  # the child's (partition_child.GETCONN_TIMEOUT)
BACKOFF_CAP = 1.0  # connector.BACKOFF_MAX: a failed connect is retried within this

pytestmark = pytest.mark.skipif(netns.why_not() is not None, reason=netns.why_not() or "")


# -- the test bed: namespaces and server, once per module -------------------------------------
@pytest.fixture(scope="module")
def bed() -> Any:
    netns.remove_stale()
    part = netns.Partition()
    server: subprocess.Popen[str] | None = None
    try:
        part.open()
        server = subprocess.Popen(
            [*part.exec_args(part.server), sys.executable, "-m", "tests.faults.netns_server"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        info = json.loads(_read_line(server, 120.0, "the server's start"))
        pw, port = info["app_password"], info["port"]
        yield {
            "part": part,
            "url": f"postgresql://app:{pw}@{netns.SERVER_ADDR}:{port}/app",
            "direct_url": f"postgresql://app:{pw}@{netns.DIRECT_ADDR}:{port}/app",
        }
    finally:
        if server is not None:
            _end(server, 60.0)
        part.close()
        assert part.left_behind() == [], "network namespaces left behind"


def _read_line(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """One line of ``proc``'s output within ``timeout`` seconds."""
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], timeout)[0]:
        raise AssertionError(f"no answer within {timeout:g} s: {what}")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"the process ended: {what} (exit {proc.wait(5)})")
    return line


def _end(proc: subprocess.Popen[str], timeout: float) -> None:
    """Close its stdin (it ends by itself then), else kill it."""
    with contextlib.suppress(OSError):
        proc.stdin.close()  # type: ignore[union-attr]
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- one scenario: a child in the client namespace, the test cutting the router --------------
def run(bed: dict[str, Any], steps: list[tuple[Any, ...]], *, kind: str = "ours", network_timeout: Any = 2.0,
        writers: int = 3, readers: int = 2, size: int = 4, slow_commit: bool = False,
        long_query: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """Run ``steps``: ("open",), ("load",) to the child, ("sleep", s), ("cut",),
    ("one_way",), ("heal",) here; then stop the child and return its report, with the cut
    windows (monotonic times, which the namespaces share) added."""
    part: netns.Partition = bed["part"]
    nt = 10.0 if network_timeout == "default" else network_timeout
    cfg = {"kind": kind, "network_timeout": network_timeout, "url": bed["url"], "direct_url": bed["direct_url"],
           "writers": writers, "readers": readers, "size": size, "slow_commit": slow_commit,
           "long_query": long_query, "join": (nt or 30.0) + 15.0}  # fmt: skip
    child = subprocess.Popen(
        [*part.exec_args(part.client), sys.executable, "-m", "tests.faults.partition_child", json.dumps(cfg)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    windows: list[list[float]] = []
    try:
        _read_line(child, 60.0, "the client's start")
        for step in steps:
            if step[0] in ("open", "load"):
                child.stdin.write(step[0] + "\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
                _read_line(child, 60.0, step[0])
            elif step[0] == "sleep":
                time.sleep(step[1])
            elif step[0] == "cut":
                part.cut()
                windows.append([time.monotonic()])
            elif step[0] == "one_way":
                part.cut_one_way(to_client=True)
                windows.append([time.monotonic()])
            elif step[0] == "heal":
                part.heal()
                windows[-1].append(time.monotonic())
        child.stdin.write("stop\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        report = json.loads(_read_line(child, cfg["join"] + 60.0, "the report"))
    except BaseException:  # a failure or Ctrl-C: no report to wait for
        child.kill()
        raise
    finally:
        part.heal()
        _end(child, 30.0)
    report["windows"] = windows
    return report


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """What the done-when criteria look at, from a report."""
    calls = r["calls"]
    heal = r["windows"][-1][1] if r["windows"] else None
    slowest: dict[str, float] = {}
    for what, t0, t1, _ in calls:
        slowest[what] = max(slowest.get(what, 0.0), t1 - t0)
    over = [t1 - t0 - GETCONN_TIMEOUT for what, t0, t1, out in calls if what == "getconn" and out != "ok"]
    after = sorted(t - heal for _, _, t in r["acked"] if heal is not None and t > heal)
    ledger = {tuple(x) for x in r["ledger"]}
    lost = [a[:2] for a in r["acked"] if tuple(a[:2]) not in ledger]
    return {
        "slowest_call": max(slowest.values(), default=0.0),
        "slowest_by_kind": {k: round(v, 2) for k, v in slowest.items()},
        "getconn_past_deadline": max(over, default=0.0),
        "first_commit_after_heal": after[0] if after else None,
        "acked": len(r["acked"]),
        "lost": len(lost),
        "unknown": r["unknown"],
        "stuck": r["stuck"],  # workload threads not back when told to stop
        "threads_left": r["alive_threads"],  # any thread still alive once the pools closed
        "long_query": r["long_query"],
        "close_took": max(r.get("close_took") or [0.0]),
    }


def check(f: dict[str, Any], network_timeout: float, *, commits_after_heal: bool = True) -> None:
    """The promises, with margins for a loaded 2-core machine."""
    print(f"\npartition figures (network_timeout={network_timeout}): {json.dumps(f)}", flush=True)
    assert f["lost"] == 0, f
    assert f["stuck"] == [] and f["threads_left"] == [], f
    assert f["slowest_call"] <= network_timeout + 3.0, f
    assert f["getconn_past_deadline"] <= 1.0, f
    if commits_after_heal:
        assert f["first_commit_after_heal"] is not None, f
        assert f["first_commit_after_heal"] <= network_timeout + BACKOFF_CAP + 3.0, f
    assert f["close_took"] <= 6.0, f


NT = 2.0  # the short variants' network_timeout
CUT = 5.0  # and their cut


# -- the short variants (make test) ----------------------------------------------------------
def test_a_cut_during_queries(bed):
    r = run(bed, [("load",), ("sleep", 1.5), ("cut",), ("sleep", CUT), ("heal",), ("sleep", 4.0)],
            long_query=CUT + 3.0)  # fmt: skip
    f = figures(r)
    check(f, NT)
    assert f["long_query"] == "ok", f  # a query longer than network_timeout, on the untouched path


def test_a_cut_during_commits(bed):
    """COMMIT is slow (a deferred trigger sleeps 0.5 s): the cut catches commits in flight;
    each says its outcome is unknown or went through, none acknowledged is lost."""
    r = run(bed, [("load",), ("sleep", 1.5), ("cut",), ("sleep", CUT), ("heal",), ("sleep", 4.0)],
            slow_commit=True, writers=4, readers=0)  # fmt: skip
    check(figures(r), NT)


def test_a_cut_while_idle(bed):
    r = run(bed, [("open",), ("sleep", 1.5), ("cut",), ("sleep", CUT), ("heal",), ("load",), ("sleep", 4.0)])
    check(figures(r), NT)


def test_a_cut_during_connect(bed):
    """The pool opens into the cut: its creators connect into silence; borrows made meanwhile
    fail at their deadline; after the heal the pool fills and serves. No creator is held
    longer than network_timeout by a connect: a new attempt starts at least that often."""
    r = run(bed, [("cut",), ("open",), ("sleep", 1.0), ("load",), ("sleep", CUT - 1.0), ("heal",), ("sleep", 5.0)])
    check(figures(r), NT)
    cut_at, heal_at = r["windows"][0]
    during = [t for t in r["connect_attempts"] if cut_at <= t <= heal_at]
    gaps = [b - a for a, b in zip([cut_at, *during], [*during, heal_at], strict=True)]
    assert len(during) >= 2 and max(gaps) <= NT + BACKOFF_CAP + 1.5, (during, gaps)


def test_a_one_way_cut(bed):
    """The server's answers vanish, the client's packets still arrive."""
    r = run(bed, [("load",), ("sleep", 1.5), ("one_way",), ("sleep", CUT), ("heal",), ("sleep", 4.0)])
    check(figures(r), NT)


def test_a_flapping_link(bed):
    steps: list[tuple[Any, ...]] = [("load",), ("sleep", 1.0)]
    for _ in range(4):
        steps += [("cut",), ("sleep", 1.0), ("heal",), ("sleep", 1.0)]
    r = run(bed, [*steps, ("sleep", 3.0)])
    check(figures(r), NT)


# -- the long variants (make chaos): 20 s cuts, and psycopg_pool beside us -------------------
LONG_CUT = 20.0


def _long(bed: dict[str, Any], kind: str, network_timeout: Any, slow_commit: bool = False) -> dict[str, Any]:
    r = run(bed, [("load",), ("sleep", 2.0), ("cut",), ("sleep", LONG_CUT), ("heal",), ("sleep", 10.0)],
            kind=kind, network_timeout=network_timeout, writers=8, readers=2, size=10, long_query=12.0,
            slow_commit=slow_commit)  # fmt: skip
    f = figures(r)
    what = "commits" if slow_commit else "queries"
    print(f"\nchaos {what} {kind} network_timeout={network_timeout}: {json.dumps(f)}", flush=True)
    out = os.environ.get("CHAOS_FIGURES")
    if out:  # the figures, for docs/reliability.md
        with open(out, "a") as fh:
            fh.write(json.dumps({"what": what, "kind": kind, "network_timeout": network_timeout, **f}) + "\n")
    return f


@pytest.mark.chaos
def test_chaos_network_timeout_3(bed):
    f = _long(bed, "ours", 3.0)
    assert f["slowest_call"] <= 6.0, f
    assert f["getconn_past_deadline"] <= 0.5, f
    assert f["first_commit_after_heal"] is not None and f["first_commit_after_heal"] <= 3.0, f
    assert f["lost"] == 0 and f["stuck"] == [] and f["threads_left"] == [], f
    assert f["long_query"] == "ok", f


@pytest.mark.chaos
def test_chaos_defaults(bed):
    f = _long(bed, "ours", "default")
    assert f["slowest_call"] <= 10.0 + 1.0, f
    assert f["lost"] == 0 and f["stuck"] == [], f


@pytest.mark.chaos
def test_chaos_psycopg_pool_defaults(bed):
    """Measured, not judged: psycopg_pool with its defaults, in the same cut."""
    pytest.importorskip("psycopg_pool")
    f = _long(bed, "psycopg_pool", None)
    assert f["lost"] == 0, f


@pytest.mark.chaos
def test_chaos_commits_network_timeout_3(bed):
    """The 20 s cut lands on slow COMMITs (0.5 s each): each in flight says its outcome is
    unknown, none acknowledged is lost."""
    f = _long(bed, "ours", 3.0, slow_commit=True)
    assert f["slowest_call"] <= 6.0, f
    assert f["getconn_past_deadline"] <= 0.5, f
    assert f["first_commit_after_heal"] is not None and f["first_commit_after_heal"] <= 3.0, f
    assert f["lost"] == 0 and f["stuck"] == [], f


@pytest.mark.chaos
def test_chaos_commits_psycopg_pool_defaults(bed):
    pytest.importorskip("psycopg_pool")
    f = _long(bed, "psycopg_pool", None, slow_commit=True)
    assert f["lost"] == 0, f
