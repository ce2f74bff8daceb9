"""Cost of leak detection: our borrow+return cycle with detection off, with the borrow site
only (leak_threshold set, capture_stacks="off"), with stacks sampled (the default) and full.

The cycle runs at a call depth of 30 frames (what a Flask view under gunicorn looks like), one
thread, a real psycopg connection, no query, two idle connections (so a borrow never takes the
last idle one, where the nested-borrow check runs). Ratios are to "no detection", measured in
the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from threadpool_db import ConnectionPool

from ._server import database

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTH = 30
MODES = {  # name -> the pool's leak-detection parameters
    "no detection": {"leak_threshold": None},
    "site only": {"leak_threshold": 3600.0, "capture_stacks": "off"},
    "sampled": {"leak_threshold": 3600.0, "capture_stacks": "sampled"},
    "full": {"leak_threshold": 3600.0, "capture_stacks": "full"},
}
BASE = "no detection"


def at_depth(depth: int, fn: Callable[[], float]) -> float:
    if depth <= 1:
        return fn()
    return at_depth(depth - 1, fn)


def cycle_us(pool: ConnectionPool, n: int) -> float:
    getconn, putconn = pool.getconn, pool.putconn
    t0 = time.perf_counter()
    for _ in range(n):
        putconn(getconn())
    return (time.perf_counter() - t0) / n * 1e6


def measure(url: str, n: int, repeats: int, depth: int = DEPTH) -> dict[str, float]:
    pools = {
        m: ConnectionPool(url, min_size=2, max_size=2, check="never", name=f"stk-{i}", open=True, **kw)
        for i, (m, kw) in enumerate(MODES.items())
    }
    try:
        for p in pools.values():
            p.wait(30)
            cycle_us(p, 1000)  # warm up
        runs: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(repeats):  # interleave the modes so drift hits them alike
            for m, p in pools.items():
                runs[m].append(at_depth(depth, lambda p=p: cycle_us(p, n)))
        return {m: statistics.median(v) for m, v in runs.items()}
    finally:
        for p in pools.values():
            p.close()


def recorder() -> str:
    """Which borrow-site recorder this process uses: "C" (_sight.c) or "pure-Python"."""
    from threadpool_db import leaks

    return "C" if leaks.NATIVE is not None else "pure-Python"


def measure_in_child(url: str, n: int, repeats: int, pure: bool) -> dict[str, float] | None:
    """measure() in a fresh interpreter, with the C recorder off when ``pure`` (the choice is
    made when threadpool_db.leaks is imported)."""
    env = {**os.environ, "DATABASE_URL": url}
    if pure:
        env["THREADPOOL_DB_PURE_PYTHON"] = "1"
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "stacks.json")
        cmd = [sys.executable, "-m", "load.bench_stacks", "--cycles", str(n), "--repeats", str(repeats), "--json", out]
        done = subprocess.run(cmd, env=env, cwd=_ROOT, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            print(f"bench_stacks in a child failed: {done.stderr[-2000:]}", file=sys.stderr)
            return None
        with open(out) as f:
            data: dict[str, Any] = json.load(f)
        if pure and data.get("recorder") != "pure-Python":
            raise RuntimeError(f"the child was to run the pure-Python recorder, it ran {data.get('recorder')!r}")
        return dict(data["us"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cycles", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    with database() as (url, _):
        res = measure(url, args.cycles, args.repeats)
    off = res[BASE]
    print(f"leak detection at call depth {DEPTH}, {recorder()} recorder, median of {args.repeats} x "
          f"{args.cycles} cycles")  # fmt: skip
    print(f"{'mode':<13} {'us/cycle':>9} {'ratio':>7}")
    for m in MODES:
        print(f"{m:<13} {res[m]:>9.2f} {res[m] / off:>6.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"us": res, "ratio": {m: res[m] / off for m in MODES}, "recorder": recorder()}, f, indent=2)


if __name__ == "__main__":
    main()
