"""psycopg's own tests, through a threadpool_db handle (issue 32's measure).

Runs psycopg's tests/ twice against one PostgreSQL this script starts (or ``DATABASE_URL``):
once as upstream wrote them (``conn`` a fresh ``psycopg.Connection``), once with ``conn`` (and
every fixture built on it) a handle borrowed from a threadpool_db pool
(``tpdb_psycopg_plugin.py``). Prints both pass counts, their ratio, and every test that passes
on the raw connection but not through the handle. Tests that close the connection or read its
private names are left out of both runs (listed with the reason in the report folder). The
pool runs ``RESET ALL`` on each return (upstream gives each test a new connection: a test's
``SET client_encoding`` would otherwise reach the next one); prepared statements and
``test_leak``-style gc counts still see the shared connection and the pool's threads.

Not part of ``make test`` (pytest does not collect these files). psycopg's source is not ours
and is never committed: point this at a checkout of the tag matching the installed psycopg.

    make upstream-psycopg PSYCOPG_SRC=/work/upstream/psycopg
    python tests/upstream/run_psycopg.py /work/upstream/psycopg [-k pattern] [--report DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# psycopg's synchronous tests of what a borrower touches through the handle (the async ones
# use their own connection, not the handle)
FILES = (
    "tests/test_connection.py", "tests/test_connection_info.py", "tests/test_cursor.py",
    "tests/test_cursor_client.py", "tests/test_cursor_common.py", "tests/test_cursor_raw.py",
    "tests/test_cursor_server.py", "tests/test_copy.py", "tests/test_pipeline.py",
    "tests/test_transaction.py", "tests/test_prepared.py", "tests/test_tpc.py", "tests/test_rows.py",
    "tests/test_adapt.py", "tests/test_sql.py", "tests/test_notify.py", "tests/test_typeinfo.py",
    "tests/test_column.py", "tests/test_errors.py", "tests/types",
)  # fmt: skip


def outcomes(junit: Path) -> dict[str, str]:
    """nodeid-like name -> passed / failed / error / skipped, from a junit report."""
    result: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        state = next((s for tag, s in (("failure", "failed"), ("error", "error"), ("skipped", "skipped"))
                      if tag in kinds), "passed")  # fmt: skip
        if result.get(name, "passed") == "passed":  # a teardown error is a second entry
            result[name] = state
    return result


def run(src: Path, dsn: str, mode: str, report: Path, extra: list[str]) -> dict[str, str]:
    junit = report / f"{mode}.xml"
    env = {**os.environ, "TPDB_CONN": mode, "TPDB_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", *FILES, f"--test-dsn={dsn}", "-p", "tpdb_psycopg_plugin",
           "-p", "no:randomly", "-o", f"cache_dir={report / 'cache'}", "-o", "addopts=", "-q", "--no-header",
           "--timeout=120", f"--junitxml={junit}", *extra]  # fmt: skip
    with open(report / f"{mode}.log", "w") as log:
        subprocess.run(cmd, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    return outcomes(junit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="?", default=os.environ.get("PSYCOPG_SRC"), help="psycopg's source tree")
    ap.add_argument("--report", help="keep the logs and junit files here (default: a temporary folder)")
    ap.add_argument("--reuse-raw", action="store_true",
                    help="take the raw run's results from the --report folder's raw.xml (the raw run does not "
                         "depend on threadpool_db: while iterating, run only the handle)")  # fmt: skip
    ap.add_argument("pytest_args", nargs="*", help="passed to both pytest runs (e.g. -k pattern)")
    args, unknown = ap.parse_known_args()
    if not args.src or not (Path(args.src) / "tests" / "fix_db.py").is_file():
        ap.error(f"psycopg's source tree (with tests/fix_db.py) is required, got {args.src!r}")
    src = Path(args.src).resolve()
    sys.path.insert(0, str(ROOT))
    from threadpool_db.embedded import database

    with tempfile.TemporaryDirectory(prefix="tpdb-psycopg-") as tmp:
        report = Path(args.report) if args.report else Path(tmp)
        report.mkdir(parents=True, exist_ok=True)
        with database(say=print) as (url, server):
            dsn = server.admin_url if server is not None else url  # superuser: extensions, as upstream's CI
            if args.reuse_raw and (report / "raw.xml").is_file():
                raw = outcomes(report / "raw.xml")
            else:
                raw = run(src, dsn, "raw", report, args.pytest_args + unknown)
            handle = run(src, dsn, "handle", report, args.pytest_args + unknown)
        passed_raw = {t for t, s in raw.items() if s == "passed"}
        passed_handle = {t for t, s in handle.items() if s == "passed"}
        lost = sorted(passed_raw - passed_handle)
        gained = sorted(passed_handle - passed_raw)
        excluded = (report / "excluded.txt").read_text().splitlines() if (report / "excluded.txt").exists() else []
        print(f"left out of both runs (closing the connection, private names): {len(excluded)}")
        print(f"passed on a raw connection: {len(passed_raw)} (of {len(raw)} run)")
        print(f"passed through the handle:  {len(passed_handle & passed_raw)} of those"
              f" (+{len(gained)} that fail raw)")  # fmt: skip
        ratio = len(passed_handle & passed_raw) / len(passed_raw) if passed_raw else 0.0
        print(f"ratio: {ratio:.2%}")
        if lost:
            print(f"\npass raw, not through the handle ({len(lost)}):")
            for name in lost:
                print(f"  {name}: {handle.get(name, 'not run')}")
        if gained:
            print(f"\npass through the handle, not raw ({len(gained)}):")
            for name in gained:
                print(f"  {name}: raw {raw.get(name, 'not run')}")
        if args.report:
            print(f"\nlogs and junit reports: {report}")
    return 0 if passed_raw and ratio >= 0.98 else 1


if __name__ == "__main__":
    sys.exit(main())
