"""The partition test's client: run inside the client namespace, it drives a pool (ours or
psycopg_pool) through the router while the test cuts it, and reports what it saw as one JSON
line. Commands come on stdin, one per line: ``open`` (make the pool), ``load`` (start the
writers, the readers and the healthy long query), ``stop`` (end them, read the ledger, report).

Every call is timed on CLOCK_MONOTONIC, which all namespaces share: the test compares the
times with those of its cut and heal. A commit that returned is *acknowledged*: the ledger must
hold it afterwards."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import psycopg

GETCONN_TIMEOUT = 2.0  # each borrow's timeout, seconds


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, float, float, str]] = []  # (what, start, end, outcome)
        self.acked: list[tuple[int, int, float]] = []  # (writer, seq, when)
        self.unknown = 0  # commits that said their outcome is unknown

    def timed(self, what: str, fn: Any, *args: Any) -> Any:
        t0 = time.monotonic()
        try:
            result = fn(*args)
        except BaseException as e:
            with self.lock:
                self.calls.append((what, t0, time.monotonic(), type(e).__name__))
            raise
        with self.lock:
            self.calls.append((what, t0, time.monotonic(), "ok"))
        return result


def make_pool(cfg: dict[str, Any], url: str, name: str, size: int) -> Any:
    if cfg["kind"] == "psycopg_pool":
        import psycopg_pool

        return psycopg_pool.ConnectionPool(url, min_size=size, max_size=size, timeout=GETCONN_TIMEOUT, name=name,
                                           open=True)  # fmt: skip
    from threadpool_db import ConnectionPool

    kw: dict[str, Any] = {}
    if cfg["network_timeout"] != "default":
        kw["network_timeout"] = cfg["network_timeout"]
    return ConnectionPool(url, min_size=size, max_size=size, timeout=GETCONN_TIMEOUT, name=name, **kw)


def writer(pool: Any, rec: Recorder, i: int, table: str, stop: threading.Event) -> None:
    seq = 0
    while not stop.is_set():
        seq += 1
        try:
            conn = rec.timed("getconn", pool.getconn, GETCONN_TIMEOUT)
        except Exception:
            time.sleep(0.1)
            continue
        try:
            rec.timed("execute", conn.execute, f"INSERT INTO {table} (writer, seq) VALUES (%s, %s)", (i, seq))
            rec.timed("commit", conn.commit)
            with rec.lock:
                rec.acked.append((i, seq, time.monotonic()))
        except Exception as e:
            if type(e).__name__ == "CommitOutcomeUnknown":
                with rec.lock:
                    rec.unknown += 1
            time.sleep(0.05)
        finally:
            try:
                rec.timed("putconn", pool.putconn, conn)
            except Exception:
                pass
        time.sleep(0.02)


def reader(pool: Any, rec: Recorder, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn = rec.timed("getconn", pool.getconn, GETCONN_TIMEOUT)
        except Exception:
            time.sleep(0.1)
            continue
        try:
            cur = rec.timed("execute", conn.execute, "SELECT pg_sleep(0.2)")
            cur.fetchall()
            rec.timed("rollback", conn.rollback)
        except Exception:
            time.sleep(0.05)
        finally:
            try:
                rec.timed("putconn", pool.putconn, conn)
            except Exception:
                pass


def long_query(pool: Any, seconds: float, out: dict[str, Any]) -> None:
    t0 = time.monotonic()
    try:
        conn = pool.getconn(GETCONN_TIMEOUT * 5)
        try:
            conn.execute("SELECT pg_sleep(%s)", (seconds,)).fetchall()
            conn.rollback()
            out["long_query"] = "ok"
        finally:
            pool.putconn(conn)
    except Exception as e:
        out["long_query"] = f"{type(e).__name__}: {e}"
    out["long_query_took"] = time.monotonic() - t0


def main() -> None:
    cfg = json.loads(sys.argv[1])
    rec = Recorder()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    out: dict[str, Any] = {"long_query": None}
    pool = direct = None
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "open":
            out["opened_at"] = time.monotonic()
            pool = make_pool(cfg, cfg["url"], "cut", cfg["size"])
        elif cmd == "load":
            if pool is None:
                pool = make_pool(cfg, cfg["url"], "cut", cfg["size"])
            table = "slow_ledger" if cfg["slow_commit"] else "ledger"
            for i in range(cfg["writers"]):
                threads.append(threading.Thread(target=writer, args=(pool, rec, i, table, stop), name=f"writer-{i}"))
            for i in range(cfg["readers"]):
                threads.append(threading.Thread(target=reader, args=(pool, rec, stop), name=f"reader-{i}"))
            if cfg["long_query"]:
                direct = make_pool(cfg, cfg["direct_url"], "direct", 1)
                threads.append(threading.Thread(target=long_query, args=(direct, cfg["long_query"], out),
                                                name="long-query"))  # fmt: skip
            for t in threads:
                t.start()
            out["load_at"] = time.monotonic()
        elif cmd == "stop":
            break
        print(json.dumps({"ok": cmd}), flush=True)
    stop.set()
    deadline = time.monotonic() + cfg["join"]
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    out["stuck"] = [t.name for t in threads if t.is_alive()]
    if pool is not None and hasattr(pool, "connect_attempts"):  # ours: when each connect started
        out["connect_attempts"] = pool.connect_attempts()
    for p in (pool, direct):
        if p is not None:
            t0 = time.monotonic()
            p.close()
            out.setdefault("close_took", []).append(time.monotonic() - t0)
    # The ledger, over the untouched direct path.
    table = "slow_ledger" if cfg["slow_commit"] else "ledger"
    with psycopg.connect(cfg["direct_url"], connect_timeout=10) as conn:
        rows = conn.execute(f"SELECT writer, seq FROM {table}").fetchall()
        conn.execute(f"TRUNCATE {table}")
    out["ledger"] = [list(r) for r in rows]
    out["calls"] = rec.calls
    out["acked"] = rec.acked
    out["unknown"] = rec.unknown
    out["alive_threads"] = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
