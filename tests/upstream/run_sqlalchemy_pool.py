"""Run SQLAlchemy's own test/engine/test_pool.py with QueuePool rebound to FairQueuePool.

    python tests/upstream/run_sqlalchemy_pool.py SQLALCHEMY_SRC [-- PYTEST_ARGS]
    make upstream-sqlalchemy-pool SQLALCHEMY_SRC=/work/upstream/sqlalchemy/sqlalchemy-2.1.9

SQLALCHEMY_SRC is SQLAlchemy's unpacked sdist, of the installed version
(``pip download --no-binary :all: --no-deps sqlalchemy==VERSION``). Its tests run on its own
mock DB-API and SQLite: no server is needed. ``sqlalchemy.pool.QueuePool`` (and
``sqlalchemy.QueuePool``) is FairQueuePool before the test module is imported, so the
combinations and the dialects' default pool class take it too.

Left out (LEFT_OUT): the tests that read QueuePool's private attributes (``_pool``,
``_overflow``, ``_max_overflow``), each with its reason. Everything else in the file runs,
the other pool classes' tests included. This file is also the pytest plugin of that run
(``-p run_sqlalchemy_pool``); ``make test`` does not collect it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TEST_FILE = "test/engine/test_pool.py"
# test (class::method, any parametrization; or a prefix of class::method[params]) -> why it is left out
LEFT_OUT = {
    "PoolTest::test_recreate_state[FairQueuePool": "compares QueuePool's __dict__ over recreate(), reads _pool",
    "QueuePoolTest::test_overflow_reset_on_failed_connect": "reads QueuePool._overflow",
    "QueuePoolTest::test_error_on_pooled_reconnect_cleanup_invalidate": "reads QueuePool._overflow and _pool",
    "QueuePoolTest::test_error_on_pooled_reconnect_cleanup_recycle": "reads QueuePool._overflow and _pool",
    "QueuePoolTest::test_error_on_pooled_reconnect_cleanup_wcheckout_event": "reads QueuePool._overflow and _pool",
    "QueuePoolTest::test_connect_handler_not_called_for_recycled": "reads QueuePool._pool (its queue)",
    "QueuePoolTest::test_connect_checkout_handler_always_gets_info": "reads QueuePool._pool (its queue)",
    "QueuePoolTest::test_recreate": "reads QueuePool._max_overflow",
}

# -- the pytest plugin (this module, loaded with -p inside SQLALCHEMY_SRC) --------------------
_rebound = False


def pytest_pycollect_makemodule(module_path: Any, parent: Any) -> None:
    """Before the test module is imported (its combinations read pool.QueuePool then), after
    SQLAlchemy's conftest put its lib/ first on sys.path."""
    global _rebound
    if _rebound:
        return
    import sqlalchemy
    import sqlalchemy.pool

    from threadpool_db.sqlalchemy import FairQueuePool

    sqlalchemy.pool.QueuePool = FairQueuePool  # type: ignore[misc]
    sqlalchemy.QueuePool = FairQueuePool  # type: ignore[misc]
    _rebound = True


def _left_out(nodeid: str) -> str | None:
    if os.environ.get("TPDB_UPSTREAM_ALL"):  # --all: run the private-attribute tests too
        return None
    test = "::".join(nodeid.split("::")[1:3])
    for key, why in LEFT_OUT.items():
        if test.split("[")[0] == key or ("[" in key and test.startswith(key)):
            return why
    return None


_results: dict[str, Any] = {"outcomes": {}, "left_out": {}}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    kept, dropped = [], []
    for item in items:
        (dropped if _left_out(item.nodeid) else kept).append(item)
    items[:] = kept
    config.hook.pytest_deselected(items=dropped)
    _results["left_out"] = {i.nodeid: _left_out(i.nodeid) for i in dropped}


def pytest_runtest_logreport(report: Any) -> None:
    out = _results["outcomes"]
    if report.when == "call" or report.outcome != "passed":
        if out.get(report.nodeid) in ("failed", "error"):
            return
        state = ("failed" if report.when == "call" else "error") if report.outcome == "failed" else report.outcome
        out[report.nodeid] = state
        if state in ("failed", "error"):
            _results.setdefault("why", {})[report.nodeid] = report.longreprtext.strip().splitlines()[-1:]


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if os.environ.get("TPDB_UPSTREAM_RESULTS"):
        Path(os.environ["TPDB_UPSTREAM_RESULTS"]).write_text(json.dumps(_results))


# -- the runner -----------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", default=os.environ.get("SQLALCHEMY_SRC"), help="SQLAlchemy's unpacked sdist")
    ap.add_argument("--all", action="store_true", help="run the tests reading QueuePool's privates too")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = ap.parse_args(argv)
    if args.all:
        os.environ["TPDB_UPSTREAM_ALL"] = "1"
    if not args.src or not (Path(args.src) / TEST_FILE).is_file():
        ap.error(f"give the path of SQLAlchemy's unpacked sdist (with {TEST_FILE}): argument or SQLALCHEMY_SRC")
    src = Path(args.src).resolve()
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="tpdb-upstream-") as tmp:
        results = Path(tmp) / "results.json"
        env = {**os.environ, "TPDB_UPSTREAM_RESULTS": str(results)}
        env["PYTHONPATH"] = os.pathsep.join([str(here), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "pytest", "-p", "run_sqlalchemy_pool", "-o", f"cache_dir={tmp}/cache", "-q",
               "-p", "no:randomly", "--timeout=120", TEST_FILE, *args.pytest_args]  # fmt: skip
        subprocess.run(cmd, cwd=src, env=env, check=False, stdout=subprocess.DEVNULL if not args.pytest_args else None)
        if not results.is_file():
            print("pytest ended without results")
            return 2
        res = json.loads(results.read_text())
    outcomes: dict[str, str] = res["outcomes"]
    counts = {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "error", "skipped")}
    ran = counts["passed"] + counts["failed"] + counts["error"]
    print(f"== SQLAlchemy's {TEST_FILE}, QueuePool rebound to FairQueuePool ({src}) ==")
    for nodeid, why in sorted(res["left_out"].items()):
        print(f"left out        {nodeid}: {why}")
    for nodeid, state in sorted(outcomes.items()):
        if state in ("failed", "error"):
            print(f"{state.upper():7} {nodeid}: {' '.join(res.get('why', {}).get(nodeid, []))[:200]}")
    print(f"passed {counts['passed']} of {ran}; failed {counts['failed']}, errors {counts['error']}, "
          f"skipped {counts['skipped']}, left out {len(res['left_out'])}")  # fmt: skip
    return 0 if counts["failed"] + counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
