"""threadpool_db against the pools Python users already have, side by side in one run.

Peers: psycopg_pool.ConnectionPool, SQLAlchemy's QueuePool around psycopg, DBUtils PooledDB,
and psycopg2's ThreadedConnectionPool (which cannot wait, so it runs only where nobody waits).
Every pool talks to the same real PostgreSQL on 127.0.0.1 and is pre-filled.

Scenarios: cycle (borrow+return, no query), statement cycle (borrow, SELECT 1, return; also
with autocommit connections), contention (32 threads on 8 connections, each borrow held ~1 ms,
against a bare Semaphore(8)), spike (200 threads at once on 10 connections, 2 s timeout), and
the cost of our stack capture. Ratios are computed within this run; absolute times on a shared
machine are not comparable between runs.

    python -m load.bench_pools [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib import metadata
from typing import Any

from ._server import database

# A pool adapter: (name, can_wait, factory(url, size, autocommit, timeout) -> Peer)


class Peer:
    """A uniform face for each pool: borrow/give back, and a statement with its usual
    transaction handling."""

    name = "?"
    can_wait = True
    can_timeout = True

    def borrow(self) -> Any:
        raise NotImplementedError

    def give_back(self, conn: Any) -> None:
        raise NotImplementedError

    def statement(self) -> None:
        raise NotImplementedError

    def idiom(self) -> None:
        """A borrow and return the way users write them with this pool (no query), in one
        frame as the peers that override it do."""
        self.give_back(self.borrow())

    def close(self) -> None:
        raise NotImplementedError


def _dbapi_statement(peer: Peer, conn: Any) -> None:
    """The plain DB-API way: cursor, SELECT 1, fetch, commit unless autocommit, give back."""
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        cur.fetchall()
        if not getattr(peer, "autocommit", False):
            conn.commit()
    finally:
        peer.give_back(conn)


class _GetconnPeer(Peer):
    """Pools with getconn/putconn, a connection() context manager and close(): ours and
    psycopg_pool, used the same way."""

    pool: Any

    def _adopt(self, pool: Any) -> None:
        pool.wait(60)
        self.pool = pool
        self.borrow = pool.getconn  # type: ignore[method-assign]
        self.give_back = pool.putconn  # type: ignore[method-assign]

    def statement(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()

    def idiom(self) -> None:
        with self.pool.connection():
            pass

    def close(self) -> None:
        self.pool.close()


class Ours(_GetconnPeer):
    name = "threadpool_db"

    def __init__(self, url: str, size: int, autocommit: bool, timeout: float) -> None:
        from threadpool_db import ConnectionPool

        self._adopt(ConnectionPool(url, min_size=size, timeout=timeout, kwargs={"autocommit": autocommit}, open=True))


class OursPlain(_GetconnPeer):
    """Ours with leak detection off: the plain cycle, beside the default one."""

    name = "threadpool_db, leak detection off"

    def __init__(self, url: str, size: int, autocommit: bool, timeout: float) -> None:
        from threadpool_db import ConnectionPool

        self._adopt(ConnectionPool(url, min_size=size, timeout=timeout, kwargs={"autocommit": autocommit}, open=True,
                                   leak_threshold=None))  # fmt: skip


class PsycopgPool(_GetconnPeer):
    name = "psycopg_pool"

    def __init__(self, url: str, size: int, autocommit: bool, timeout: float) -> None:
        from psycopg_pool import ConnectionPool

        self._adopt(ConnectionPool(url, min_size=size, max_size=size, timeout=timeout,
                                   kwargs={"autocommit": autocommit}, open=True))  # fmt: skip


class QueuePool(Peer):
    name = "sqlalchemy QueuePool"

    def __init__(self, url: str, size: int, autocommit: bool, timeout: float) -> None:
        import psycopg
        from sqlalchemy.pool import QueuePool as QP

        self.autocommit = autocommit
        self.pool = QP(lambda: psycopg.connect(url, autocommit=autocommit), pool_size=size, max_overflow=0,
                       timeout=timeout, reset_on_return="rollback")  # fmt: skip
        held = [self.pool.connect() for _ in range(size)]  # pre-fill
        for c in held:
            c.close()

    def borrow(self) -> Any:
        return self.pool.connect()

    def idiom(self) -> None:
        self.pool.connect().close()  # in one frame, as ours

    def give_back(self, conn: Any) -> None:
        conn.close()

    def statement(self) -> None:
        _dbapi_statement(self, self.pool.connect())

    def close(self) -> None:
        self.pool.dispose()


class DBUtilsPool(Peer):
    name = "DBUtils PooledDB"
    can_timeout = False  # blocking=True waits without a timeout

    def __init__(self, url: str, size: int, autocommit: bool, timeout: float) -> None:
        import psycopg
        from dbutils.pooled_db import PooledDB

        self.autocommit = autocommit
        self.pool = PooledDB(lambda: psycopg.connect(url, autocommit=autocommit), mincached=size, maxcached=size,
                             maxconnections=size, blocking=True, ping=0)  # fmt: skip

    def borrow(self) -> Any:
        return self.pool.connection()

    def give_back(self, conn: Any) -> None:
        conn.close()

    def statement(self) -> None:
        _dbapi_statement(self, self.pool.connection())

    def idiom(self) -> None:
        self.pool.connection().close()  # in one frame, as ours: no borrow/give_back helper frames

    def close(self) -> None:
        self.pool.close()


class Psycopg2Pool(Peer):
    name = "psycopg2 ThreadedConnectionPool"
    can_wait = False

    def __init__(self, url: str, size: int, autocommit: bool, timeout: float) -> None:
        from psycopg2.pool import ThreadedConnectionPool

        self.autocommit = autocommit
        self.pool = ThreadedConnectionPool(size, size, url)
        held = [self.pool.getconn() for _ in range(size)]
        for c in held:
            c.autocommit = autocommit
            self.pool.putconn(c)

    def borrow(self) -> Any:
        return self.pool.getconn()

    def give_back(self, conn: Any) -> None:
        self.pool.putconn(conn)

    def statement(self) -> None:
        _dbapi_statement(self, self.pool.getconn())

    def close(self) -> None:
        self.pool.closeall()


PEERS: list[type[Peer]] = [Ours, PsycopgPool, QueuePool, DBUtilsPool, Psycopg2Pool]


class Floor(AbstractContextManager["Floor"]):
    """The floor of any locked pool in CPython: a lock and a deque, pop then append."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.d: deque[object] = deque([object()])

    def cycle(self, n: int) -> float:
        lock, d = self.lock, self.d
        t0 = time.perf_counter()
        for _ in range(n):
            with lock:
                x = d.pop()
            with lock:
                d.append(x)
        return (time.perf_counter() - t0) / n * 1e6

    def __exit__(self, *a: object) -> None:
        return None


# -- scenarios ---------------------------------------------------------------------------------
def _timed(fn: Callable[[], None], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def cycle(peers: dict[str, Peer], n: int, repeats: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {name: [] for name in peers}
    runs["lock+deque floor"] = []
    floor = Floor()
    for _ in range(repeats):  # interleaved, so drift hits every pool alike
        for name, p in peers.items():
            b, g = p.borrow, p.give_back
            runs[name].append(_timed(lambda b=b, g=g: g(b()), n))
        runs["lock+deque floor"].append(floor.cycle(n))
    return {k: statistics.median(v) for k, v in runs.items()}


def idiom_cycle(peers: dict[str, Peer], n: int, repeats: int) -> dict[str, float]:
    """The borrow as users write it: ``with pool.connection():`` for ours and psycopg_pool,
    ``connect().close()`` for QueuePool, ``connection().close()`` for DBUtils; and ours by
    getconn/putconn in the same rounds, for the idiom's own cost."""
    runs: dict[str, list[float]] = {name: [] for name in peers}
    runs["threadpool_db getconn/putconn"] = []
    ours = peers["threadpool_db"]
    for _ in range(repeats):
        for name, p in peers.items():
            runs[name].append(_timed(p.idiom, n))
        b, g = ours.borrow, ours.give_back
        runs["threadpool_db getconn/putconn"].append(_timed(lambda b=b, g=g: g(b()), n))
    return {k: statistics.median(v) for k, v in runs.items()}


def otel_cycle(url: str, n: int, repeats: int) -> dict[str, float]:
    """Our cycle (defaults) not instrumented, instrumented with the OpenTelemetry API's no-op
    provider (no SDK configured), and with the SDK and a reader attached."""
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from threadpool_db import ConnectionPool
    from threadpool_db.otel import instrument

    sdk = MeterProvider(metric_readers=[InMemoryMetricReader()])
    pools = {name: ConnectionPool(url, min_size=1, max_size=1, name=f"otel-{i}", open=True)
             for i, name in enumerate(("not instrumented", "API no-op", "SDK, a reader attached"))}  # fmt: skip
    try:
        for p in pools.values():
            p.wait(60)
        instrument(pools["API no-op"], meter_provider=NoOpMeterProvider())
        instrument(pools["SDK, a reader attached"], meter_provider=sdk)
        runs: dict[str, list[float]] = {name: [] for name in pools}
        for _ in range(repeats):
            for name, p in pools.items():
                runs[name].append(_timed(lambda p=p: p.putconn(p.getconn()), n))
        return {k: statistics.median(v) for k, v in runs.items()}
    finally:
        for p in pools.values():
            p.close()
        sdk.shutdown()


def sqlalchemy_rows(url: str, n: int, repeats: int, secs: float, rounds: int) -> dict[str, Any]:
    """SQLAlchemy's pools side by side: the ``pool.connect().close()`` cycle (FairQueuePool with
    leak detection on, the default, and off, against QueuePool), and contention (32 threads on
    8 connections, 1 ms holds): the per-thread spread and the max wait."""
    import psycopg
    from sqlalchemy.pool import QueuePool as QP

    from threadpool_db.sqlalchemy import FairQueuePool

    def creator() -> Any:
        return psycopg.connect(url)

    def make(size: int) -> dict[str, Any]:
        return {"QueuePool": QP(creator, pool_size=size, max_overflow=0, timeout=30),
                "FairQueuePool": FairQueuePool(creator, pool_size=size, max_overflow=0, timeout=30),
                "FairQueuePool, leak detection off": FairQueuePool(creator, pool_size=size, max_overflow=0,
                                                                   timeout=30, leak_threshold=None)}  # fmt: skip

    out: dict[str, Any] = {}
    pools = make(1)
    try:
        for p in pools.values():
            p.connect().close()  # connected once, before timing
        runs: dict[str, list[float]] = {name: [] for name in pools}
        for _ in range(repeats):
            for name, p in pools.items():
                runs[name].append(_timed(lambda p=p: p.connect().close(), n))
        out["cycle_us"] = {k: statistics.median(v) for k, v in runs.items()}
    finally:
        for p in pools.values():
            p.dispose()
    pools = make(8)
    try:
        res: dict[str, list[dict[str, Any]]] = {name: [] for name in pools if "off" not in name}
        for _ in range(rounds):
            for name in res:
                res[name].append(contention(pools[name].connect, lambda c: c.close(), 32, secs))
        out["contention"] = {name: _merge_rounds(r) for name, r in res.items()}
    finally:
        for p in pools.values():
            p.dispose()
    return out


def statement_cycle(peers: dict[str, Peer], n: int, repeats: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {name: [] for name in peers}
    for _ in range(repeats):
        for name, p in peers.items():
            runs[name].append(_timed(p.statement, n))
    return {k: statistics.median(v) for k, v in runs.items()}


def contention(acquire: Callable[[], Any], release: Callable[[Any], None], threads: int, seconds: float,
               hold: float = 0.001) -> dict[str, Any]:  # fmt: skip
    stop = time.monotonic() + seconds
    counts = [0] * threads
    waits: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        start.wait()
        w = waits[i]
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            c = acquire()
            w.append(time.perf_counter() - t0)
            time.sleep(hold)
            release(c)
            counts[i] += 1

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    t0 = time.monotonic()
    start.wait()
    for t in ts:
        t.join(seconds + 60)
    took = time.monotonic() - t0
    allw = sorted(x for w in waits for x in w)
    pct = lambda q: allw[min(len(allw) - 1, int(q * len(allw)))] * 1000 if allw else 0.0  # noqa: E731
    return {"ops_per_s": sum(counts) / took, "wait_p50_ms": pct(0.50), "wait_p99_ms": pct(0.99),
            "wait_max_ms": allw[-1] * 1000 if allw else 0.0, "borrows_min": min(counts),
            "borrows_max": max(counts), "hung": sum(t.is_alive() for t in ts)}  # fmt: skip


def _merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Contention rounds of one pool: medians of the rates and percentiles, the worst max wait
    and the median round's, the widest borrows-per-thread spread."""
    med = statistics.median
    return {"ops_per_s": med(r["ops_per_s"] for r in rounds), "wait_p50_ms": med(r["wait_p50_ms"] for r in rounds),
            "wait_p99_ms": med(r["wait_p99_ms"] for r in rounds),
            "wait_max_ms": max(r["wait_max_ms"] for r in rounds),
            "wait_max_median_ms": med(r["wait_max_ms"] for r in rounds),
            "borrows_min": min(r["borrows_min"] for r in rounds), "borrows_max": max(r["borrows_max"] for r in rounds),
            "hung": sum(r["hung"] for r in rounds), "rounds": len(rounds)}  # fmt: skip


def spike(p: Peer, threads: int, hold: float, timeout: float) -> dict[str, Any]:
    start = threading.Barrier(threads + 1)
    done: list[float] = []
    timeouts = [0]
    lock = threading.Lock()

    def worker() -> None:
        start.wait()
        try:
            c = p.borrow()
        except Exception:  # each pool has its own timeout exception
            with lock:
                timeouts[0] += 1
            return
        time.sleep(hold)
        p.give_back(c)
        with lock:
            done.append(time.monotonic())

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in ts:
        t.join(timeout + 60)
    return {"served": len(done), "timeouts": timeouts[0], "time_to_serve_all_s": (max(done) - t0) if done else 0.0,
            "hung": sum(t.is_alive() for t in ts)}  # fmt: skip


# -- the run -------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    out = {}
    for dist in ("threadpool_db", "psycopg", "psycopg-pool", "SQLAlchemy", "DBUtils", "psycopg2-binary"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _make(url: str, size: int, autocommit: bool, timeout: float, only_waiting: bool = False) -> dict[str, Peer]:
    peers: dict[str, Peer] = {}
    for cls in PEERS:
        if only_waiting and not cls.can_wait:
            continue
        peers[cls.name] = cls(url, size, autocommit, timeout)
    return peers


def _close(peers: dict[str, Peer]) -> None:
    for p in peers.values():
        try:
            p.close()
        except Exception as e:
            print(f"  closing {p.name}: {e}", file=sys.stderr)


def run(url: str, quick: bool) -> dict[str, Any]:
    n = 300 if quick else 20000
    sn = 50 if quick else 3000
    repeats = 5
    secs = 0.5 if quick else 3.0
    res: dict[str, Any] = {
        "python": platform.python_version(), "cores": os.cpu_count(), "versions": _versions(),
        "quick": quick,
    }  # fmt: skip

    peers = _make(url, 1, False, 30.0)
    peers[OursPlain.name] = OursPlain(url, 1, False, 30.0)  # the cycle only
    try:
        res["cycle_us"] = cycle(peers, n, repeats)
        _close({OursPlain.name: peers.pop(OursPlain.name)})
        res["idiom_us"] = idiom_cycle({k: v for k, v in peers.items() if v.can_wait}, n, repeats)
        res["statement_us"] = statement_cycle(peers, sn, repeats)
    finally:
        _close(peers)
    res["otel_us"] = otel_cycle(url, n, repeats)
    peers = _make(url, 1, True, 30.0)
    try:
        res["statement_autocommit_us"] = statement_cycle(peers, sn, repeats)
    finally:
        _close(peers)

    peers = _make(url, 8, False, 30.0, only_waiting=True)
    try:
        # Rounds, interleaved so drift hits every pool alike: a single run's max wait is one
        # sample of the OS scheduler's worst moment, so the worst and the median round are shown.
        runs: dict[str, list[dict[str, Any]]] = {"Semaphore(8) ceiling": [], **{name: [] for name in peers}}
        for _ in range(1 if quick else 3):
            sem = threading.Semaphore(8)
            runs["Semaphore(8) ceiling"].append(contention(sem.acquire, lambda _, s=sem: s.release(), 32, secs))
            for name, p in peers.items():
                runs[name].append(contention(p.borrow, p.give_back, 32, secs))
        res["contention"] = {name: _merge_rounds(r) for name, r in runs.items()}
    finally:
        _close(peers)

    res["sqlalchemy"] = sqlalchemy_rows(url, n, repeats, secs, 1 if quick else 3)

    res["spike"] = {}
    for cls in PEERS:
        if not cls.can_wait:
            continue
        p = cls(url, 10, False, 2.0)
        try:
            res["spike"][cls.name] = spike(p, 200, 0.01, 2.0)
            res["spike"][cls.name]["has_timeout"] = cls.can_timeout
        finally:
            p.close()

    from . import bench_stacks

    res["stack_capture_us"] = bench_stacks.measure(url, n, repeats)
    res["recorder"] = bench_stacks.recorder()
    # The same without the C recorder (an install with no compiler), in a process of its own:
    # the choice is made at import.
    res["stack_capture_pure_us"] = bench_stacks.measure_in_child(url, n, repeats, pure=True)
    return res


def render(res: dict[str, Any]) -> str:
    ours = "threadpool_db"
    out = [f"Python {res['python']}, {res['cores']} cores; "
           + ", ".join(f"{k} {v}" for k, v in res["versions"].items())]  # fmt: skip

    def ratio(a: float, b: float) -> str:
        return f"{a / b:6.2f}x" if b else "   n/a"

    for key, title in (("cycle_us", "Cycle: borrow+return, one thread, no query (us, median)"),
                       ("statement_us", "Statement cycle: borrow, SELECT 1, commit/return (us)"),
                       ("statement_autocommit_us", "Statement cycle, autocommit connections (us)")):  # fmt: skip
        out.append(f"\n{title}")
        out.append(f"  {'pool':<32} {'us':>9} {'peer/ours':>10}")
        base = res[key][ours]
        for name, v in res[key].items():
            out.append(f"  {name:<32} {v:9.2f} {ratio(v, base):>10}")
    idiom = res.get("idiom_us")
    if idiom:
        out.append("\nThe idiom: `with pool.connection():` (QueuePool: connect().close(), DBUtils: "
                   "connection().close()), one thread, no query, defaults (us)")  # fmt: skip
        for name, v in idiom.items():
            out.append(f"  {name:<32} {v:9.2f}")
        mine, plain = idiom[ours], idiom["threadpool_db getconn/putconn"]
        line = f"  ours: the idiom {mine / plain:.2f}x getconn/putconn"
        if "DBUtils PooledDB" in idiom:
            line += f", {mine / idiom['DBUtils PooledDB']:.2f}x DBUtils"
        if "psycopg_pool" in idiom:
            line += f", {mine / idiom['psycopg_pool']:.2f}x psycopg_pool"
        out.append(line)
    c = res["cycle_us"]
    waiting_peers = [k for k in ("psycopg_pool", "sqlalchemy QueuePool", "DBUtils PooledDB") if k in c]
    fastest = min(waiting_peers, key=lambda k: c[k]) if waiting_peers else None
    if fastest:
        for name in (ours, OursPlain.name):
            if name in c:
                out.append(f"  {name}: {c[name] / c[fastest]:.2f}x the fastest waiting peer ({fastest}),"
                           f" {c[name] / c['lock+deque floor']:.2f}x the lock+deque floor")  # fmt: skip

    otel = res.get("otel_us")
    if otel:
        out.append(
            "\nOpenTelemetry metrics (threadpool_db.otel), our cycle with the defaults (us; ratio to not instrumented)"
        )
        base = otel["not instrumented"]
        for name, v in otel.items():
            out.append(f"  {name:<32} {v:9.2f} {v / base:9.2f}x")

    rounds = next(iter(res["contention"].values())).get("rounds", 1)
    out.append(f"\nContention: 32 threads, 8 connections, each borrow held ~1 ms; {rounds} round(s) each, medians;"
               " max wait: the worst round / the median round")  # fmt: skip
    out.append(f"  {'pool':<32} {'ops/s':>8} {'% ceil':>7} {'wait p50':>9} {'p99':>8} {'max ms':>15} "
               f"{'borrows/thread min..max':>24}")  # fmt: skip
    ceil = res["contention"]["Semaphore(8) ceiling"]["ops_per_s"]
    for name, r in res["contention"].items():
        mx = f"{r['wait_max_ms']:.1f} / {r.get('wait_max_median_ms', r['wait_max_ms']):.1f}"
        out.append(
            f"  {name:<32} {r['ops_per_s']:8.0f} {100 * r['ops_per_s'] / ceil:6.1f}% {r['wait_p50_ms']:9.2f} "
            f"{r['wait_p99_ms']:8.2f} {mx:>15} {r['borrows_min']:>13}..{r['borrows_max']:<10}"
        )

    sa_rows = res.get("sqlalchemy")
    if sa_rows:
        c = sa_rows["cycle_us"]
        out.append("\nSQLAlchemy: pool.connect().close(), one thread, no query (us; ratio to QueuePool)")
        for name, v in c.items():
            out.append(f"  {name:<36} {v:8.2f} {v / c['QueuePool']:6.2f}x")
        out.append("SQLAlchemy contention: 32 threads, 8 connections, 1 ms holds (the worst / the median round)")
        for name, r in sa_rows["contention"].items():
            mx = f"{r['wait_max_ms']:.1f} / {r.get('wait_max_median_ms', r['wait_max_ms']):.1f}"
            out.append(f"  {name:<36} {r['ops_per_s']:8.0f} ops/s  max wait {mx:>15} ms  "
                       f"borrows/thread {r['borrows_min']}..{r['borrows_max']}")  # fmt: skip

    out.append("\nSpike: 200 threads at once, 10 connections, hold 10 ms, timeout 2 s")
    out.append(f"  {'pool':<32} {'served':>7} {'timeouts':>9} {'time to serve all s':>20}")
    for name, r in res["spike"].items():
        note = "" if r["has_timeout"] else "  (no borrow timeout available)"
        out.append(f"  {name:<32} {r['served']:7d} {r['timeouts']:9d} {r['time_to_serve_all_s']:20.3f}{note}")

    for key, title in (
        ("stack_capture_us", f"the {res.get('recorder', '?')} borrow-site recorder"),
        ("stack_capture_pure_us", "the pure-Python recorder (an install with no compiler)"),
    ):
        s = res.get(key)
        if not s:
            continue
        base = s["no detection"]
        out.append(f"\nLeak detection, our cycle at call depth 30, {title} (us; ratio to no detection)")
        for m, v in s.items():
            out.append(f"  {m:<13} {v:8.2f} {v / base:6.2f}x")
        out.append(f"  borrow site alone: {(s['site only'] - base) * 1000:.0f} ns a borrow")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m load.bench_pools", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="tiny iteration counts (a smoke run, not a measurement)")
    ap.add_argument("--json", default="load/results/bench_pools.json", help="where to write results.json")
    args = ap.parse_args(argv)
    with database({"max_connections": 200}) as (url, _):
        res = run(url, args.quick)
    print(render(res))
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
