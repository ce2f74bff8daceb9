"""Run psycopg_pool's own sync pool tests with ``psycopg_pool`` rebound to threadpool_db.

    python tests/upstream/run_psycopg_pool.py PSYCOPG_SRC [-k EXPR] [--list]
    make upstream-pool PSYCOPG_SRC=/work/upstream/psycopg

PSYCOPG_SRC is a checkout of github.com/psycopg/psycopg (its tests/pool/ is what runs; the
psycopg and psycopg_pool packages imported are never its own: psycopg is the installed one,
psycopg_pool is threadpool_db). Without DATABASE_URL an embedded PostgreSQL is started for the
run and removed after it. The proxy tests need ``pproxy`` installed (``pip install pproxy``).

The run prints the pass count over the public-behaviour tests, each failure, and each test left
out with its reason. Left out: the async files (our pool is blocking) and the tests that read
psycopg_pool's private names (LEFT_OUT below). Kept: the tests whose helper ``ensure_waiting``
reads ``pool._waiting`` (ours is the same queue of waiters) and those reading a connection's
``_pool`` (psycopg_pool's attribute on a lent connection, which Django reads too).

This file is also the pytest plugin of that run (``-p run_psycopg_pool``): it rebinds the
module and records the outcomes. It is not collected by ``make test``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

FILES = ["tests/pool/test_pool.py", "tests/pool/test_pool_common.py", "tests/pool/test_pool_null.py"]
LEFT_OUT_FILES = {
    "tests/pool/test_pool_async.py": "asyncio only (AsyncConnectionPool)",
    "tests/pool/test_pool_common_async.py": "asyncio only",
    "tests/pool/test_pool_null_async.py": "asyncio only (AsyncNullConnectionPool)",
    "tests/pool/test_pool_async_noasyncio.py": "asyncio only",
    "tests/pool/test_sched.py": "psycopg_pool.sched, a private module",
    "tests/pool/test_sched_async.py": "psycopg_pool.sched, a private module; asyncio",
    "tests/pool/test_module.py": "runs mypy on psycopg_pool's __version__ (packaging, not behaviour)",
}
# test function (any parametrization) -> why it is left out
LEFT_OUT = {
    "test_pool.py::test_concurrent_filling": "patches ConnectionPool._add_to_pool",
    "test_pool.py::test_shrink": "patches psycopg_pool's ShrinkPool._run, reads pool._nconns",
    "test_pool.py::test_reconnect": "patches psycopg_pool.base.AttemptWithBackoff",
    "test_pool.py::test_check_backoff": "patches psycopg_pool.base.AttemptWithBackoff",
    "test_pool.py::test_reconnect_failure": "reads pool._nconns",
    "test_pool.py::test_reconnect_after_grow_failed": "reads pool._pool (the idle deque)",
    "test_pool.py::test_refill_on_check": "reads pool._pool",
    "test_pool.py::test_resize": "reads pool._pool",
    "test_pool.py::test_check": "reads pool._pool",
    "test_pool.py::test_spike": "reads pool._pool",
    "test_pool.py::test_check_returns_an_ok_connection": "reads pool._pool",
    "test_pool.py::test_override_close": "reads pool._pool",
    "test_pool.py::test_close_returns": "reads pool._pool",
    "test_pool.py::test_close_returns_custom_class": "reads pool._pool",
    "test_pool.py::test_close_returns_no_loop": "reads pool._pool",
    "test_pool.py::test_override_close_no_loop_subclass": "reads pool._pool",
    "test_pool_common.py::test_setup_no_timeout": "reads pool._pool",
    "test_pool_common.py::test_dead_client": "reads pool._pool",
    "test_pool_common.py::test_close_no_tasks": "reads pool._sched_runner and pool._workers",
    "test_pool_common.py::test_del_stops_threads": "reads pool._sched_runner and pool._workers",
    "test_pool_common.py::test_reopen": "reads pool._sched_runner and pool._workers",
    "test_pool_common.py::test_jitter": "calls the private ConnectionPool._jitter",
}

# test function -> why it still fails: differences kept on purpose (docs/api.md, README), or
# known and not fixed yet. Printed next to the failure; each still counts as failing.
KNOWN = {
    "test_pool.py::test_closed_putconn": "on purpose: a returned handle reads closed (issue 32 item 4)",
    "test_pool.py::test_uniform_use": "on purpose: LIFO idle order; and id(conn) is a new handle per borrow",
    "test_pool.py::test_max_lifetime": "on purpose: an idle connection is retired as its lifetime ends",
    "test_pool.py::test_grow": "on purpose: one connect per waiter (up to num_workers), not one at a time",
}

# -- the pytest plugin (this module, loaded with -p inside PSYCOPG_SRC) ----------------------


def _rebind() -> None:
    """``import psycopg_pool`` gives threadpool_db's pools and errors from now on."""
    import threadpool_db

    mod = types.ModuleType("psycopg_pool")
    mod.__version__ = threadpool_db.__version__  # type: ignore[attr-defined]
    for name in ("ConnectionPool", "NullConnectionPool", "PoolTimeout", "PoolClosed", "TooManyRequests"):
        setattr(mod, name, getattr(threadpool_db, name))
    mod.__file__ = threadpool_db.__file__
    sys.modules["psycopg_pool"] = mod


if os.environ.get("TPDB_UPSTREAM_RESULTS"):
    _rebind()


def _key(nodeid: str) -> str:
    path, _, name = nodeid.partition("::")
    return f"{Path(path).name}::{name.split('[')[0]}"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    kept, dropped = [], []
    for item in items:
        (dropped if _key(item.nodeid) in LEFT_OUT else kept).append(item)
    items[:] = kept
    config.hook.pytest_deselected(items=dropped)
    _results["left_out"] = {i.nodeid: LEFT_OUT[_key(i.nodeid)] for i in dropped}


_results: dict[str, Any] = {"outcomes": {}, "left_out": {}}


def pytest_runtest_logreport(report: Any) -> None:
    out = _results["outcomes"]
    if report.when == "call" or report.outcome != "passed":
        if out.get(report.nodeid) in ("failed", "error"):
            return  # a teardown error after a failure stays a failure
        if report.outcome == "failed":
            state = "failed" if report.when == "call" else "error"
        else:
            state = report.outcome
        out[report.nodeid] = state
        if state in ("failed", "error"):
            _results.setdefault("why", {})[report.nodeid] = report.longreprtext.strip().splitlines()[-1:]


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    Path(os.environ["TPDB_UPSTREAM_RESULTS"]).write_text(json.dumps(_results))


# -- the runner -----------------------------------------------------------------------------


def _run(src: Path, url: str, extra: list[str], results: Path, cache: str) -> int:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "TPDB_UPSTREAM_RESULTS": str(results)}
    env["PYTHONPATH"] = os.pathsep.join([str(here), str(src), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-p", "run_psycopg_pool", "--test-dsn", url, "-o", f"cache_dir={cache}",
           "-q", "-p", "no:randomly", "--timeout=180", "-rN", *FILES, *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=src, env=env, check=False).returncode


def main(argv: list[str]) -> int:
    import argparse

    from threadpool_db.embedded import database

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", default=os.environ.get("PSYCOPG_SRC"), help="psycopg checkout")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = ap.parse_args(argv)
    if not args.src or not (Path(args.src) / "tests/pool/test_pool.py").is_file():
        ap.error("give the path of a psycopg checkout (with tests/pool/): argument or PSYCOPG_SRC")
    src = Path(args.src).resolve()
    with tempfile.TemporaryDirectory(prefix="tpdb-upstream-") as tmp:
        results = Path(tmp) / "results.json"
        with database({"max_connections": 200}) as (url, server):
            _run(src, server.admin_url if server is not None else url, args.pytest_args, results, f"{tmp}/cache")
        if not results.is_file():
            print("pytest ended without results (see above)")
            return 2
        res = json.loads(results.read_text())
    outcomes: dict[str, str] = res["outcomes"]
    counts = {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "error", "skipped")}
    ran = counts["passed"] + counts["failed"] + counts["error"]
    print(f"\n== psycopg_pool's sync pool tests on threadpool_db ({src}) ==")
    for f, why in LEFT_OUT_FILES.items():
        print(f"left out, file  {f}: {why}")
    for nodeid, why in sorted(res["left_out"].items()):
        print(f"left out        {nodeid}: {why}")
    for nodeid, state in sorted(outcomes.items()):
        if state in ("failed", "error"):
            known = f" [{KNOWN[_key(nodeid)]}]" if _key(nodeid) in KNOWN else ""
            print(f"{state.upper():7} {nodeid}:{known} {' '.join(res.get('why', {}).get(nodeid, []))[:200]}")
    for nodeid, state in sorted(outcomes.items()):
        if state == "skipped":
            print(f"skipped {nodeid}")
    pct = 100.0 * counts["passed"] / ran if ran else 0.0
    print(f"passed {counts['passed']} of {ran} ({pct:.1f}%); failed {counts['failed']}, errors {counts['error']}, "
          f"skipped {counts['skipped']}, left out {len(res['left_out'])}")  # fmt: skip
    return 0 if counts["failed"] + counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
