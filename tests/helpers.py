"""Test helpers shared by the test modules."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from .timing import JOIN, POLL, SETTLE


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
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def backends(url: str, app_name: str) -> list[int]:
    return [r[0] for r in sql(url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app_name,))]
