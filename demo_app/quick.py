"""A short look at the pool: 64 threads share 8 connections, then print pool.stats().

Runs against DATABASE_URL, or starts an embedded PostgreSQL and stops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from threadpool_db import ConnectionPool
from threadpool_db.embedded import database, stop_on_signals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--queries", type=int, default=40, help="queries per thread")
    args = ap.parse_args()
    with (
        stop_on_signals(),
        database(say=print) as (url, _),
        ConnectionPool(url, min_size=args.size, name="demo") as pool,
    ):
        pool.wait(30)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(args.queries):
                    with pool.connection() as conn:
                        conn.execute("SELECT pg_sleep(0.002)")
            except BaseException as e:
                errors.append(e)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, name=f"w{i}") for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        took = time.perf_counter() - t0
        n = args.threads * args.queries
        print(f"{args.threads} threads x {args.queries} queries on a pool of {args.size}: "
              f"{n} queries in {took:.2f} s ({n / took:.0f}/s), errors: {len(errors)}")  # fmt: skip
        print(json.dumps(pool.stats(), indent=2))

        cycles = 20000
        t0 = time.perf_counter()
        for _ in range(cycles):
            pool.putconn(pool.getconn())
        print(f"borrow+return cycle (one thread, no query): {(time.perf_counter() - t0) / cycles * 1e6:.2f} us")


if __name__ == "__main__":
    main()
