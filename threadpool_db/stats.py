"""Bounded windows of recent samples, for percentiles that cost nothing to record, and the
formatting of a pool's counts as ``stats()`` and psycopg_pool's ``get_stats()`` show them, and
the recorders a borrow and a return call (a window's append, fanned out to observers)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

WINDOW = 2048


class Window:
    """The last ``WINDOW`` samples (seconds). Appending is one deque op; percentiles sort a copy."""

    __slots__ = ("_d", "append")

    def __init__(self, size: int = WINDOW) -> None:
        self._d: deque[float] = deque(maxlen=size)
        self.append = self._d.append

    def percentiles_ms(self, *ps: float) -> list[float]:
        data = sorted(self._d)
        if not data:
            return [0.0 for _ in ps]
        n = len(data)
        return [round(data[min(n - 1, int(p / 100.0 * n))] * 1000.0, 3) for p in ps]

    def mean(self) -> float:
        data = list(self._d)
        return sum(data) / len(data) if data else 0.0

    def max_ms(self) -> float:
        return round(max(self._d, default=0.0) * 1000.0, 3)

    def snapshot(self) -> list[float]:
        return list(self._d)

    def clear(self) -> None:
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


# -- a pool's counts, as stats() and psycopg_pool's get_stats() show them ------------------------
Recorder = Callable[[float], Any]


def _fan_out(first: Recorder, rest: list[Recorder]) -> Recorder:
    if not rest:
        return first  # nobody observes: the window's own append, no extra call

    def record(x: float) -> None:
        first(x)
        for f in rest:
            f(x)

    return record


def recorders(waits: Window, holds: Window, connects: Window, observers: list[Any]) -> tuple[
        Recorder, Recorder, Recorder, Callable[[str, float], Any] | None]:  # fmt: skip
    """What a borrow, a return and a connect record (each window, then every observer that
    has ``acquired``, ``released`` or ``connected``), and what a tenant's borrow tells the
    observers with ``tenant_acquired`` (None: nobody)."""
    tenant = [o.tenant_acquired for o in observers if hasattr(o, "tenant_acquired")]
    return (
        _fan_out(waits.append, [o.acquired for o in observers if hasattr(o, "acquired")]),
        _fan_out(holds.append, [o.released for o in observers if hasattr(o, "released")]),
        _fan_out(connects.append, [o.connected for o in observers if hasattr(o, "connected")]),
        (lambda t, x: [f(t, x) for f in tenant]) if tenant else None,
    )


def psycopg_counters(c: dict[str, Any]) -> dict[str, float]:
    """psycopg_pool's counters from a pool's counts (ConnectionPool._counts_locked)."""
    errors = c["timeouts"] + c["rejected"] + c["config_errors"]
    return {
        "requests_num": c["borrows"] + errors,
        "requests_queued": c["waits"],
        "requests_wait_ms": c["wait_sum"] * 1000.0,
        "requests_errors": errors,
        "usage_ms": c["usage_sum"] * 1000.0,
        "returns_bad": c["returns_bad"],
        "connections_num": c["attempts_started"],  # as psycopg_pool: counted as each begins
        "connections_ms": c["connect_sum"] * 1000.0,
        "connections_errors": c["create_errors"],
        "connections_lost": c["check_failed"],
    }


def psycopg_measures(c: dict[str, Any]) -> dict[str, int]:
    return {"pool_min": c["min_size"], "pool_max": c["max_size"], "pool_size": c["size"], "pool_available": c["idle"],
            "requests_waiting": c["waiting"]}  # fmt: skip


def psycopg_view(counters: dict[str, float], base: dict[str, float], measures: dict[str, int]) -> dict[str, int]:
    """get_stats()/pop_stats(): the counters since ``base``, those still at zero left out (as
    psycopg_pool does), and the sizes now."""
    d = {k: int(v - base.get(k, 0)) for k, v in counters.items()}
    return {**{k: v for k, v in d.items() if v}, **measures}


STATS_KEYS = ("size", "idle", "in_use", "waiting", "growing", "min_size", "max_size", "borrows", "waits", "timeouts",
              "rejected", "created", "closed", "create_errors", "discarded_broken", "check_failed", "reset_failed",
              "expired", "idle_closed", "housekeeper_runs", "last_error", "config_error", "config_errors",
              "pool_closed")  # fmt: skip


def pool_stats(name: str, pid: int, c: dict[str, Any], waits: Window, holds: Window) -> dict[str, Any]:
    """stats(): the counts, in this order, and the recent wait and hold percentiles (ms)."""
    d: dict[str, Any] = {"name": name, "pid": pid, **{k: c[k] for k in STATS_KEYS}}
    for extra in ("burst_size", "bursting", "tenants"):
        if extra in c:
            d[extra] = c[extra]
    d["sockets"] = c["size"]  # one per connection
    d["wait_p50_ms"], d["wait_p99_ms"] = waits.percentiles_ms(50, 99)
    d["wait_max_ms"] = waits.max_ms()
    d["hold_p50_ms"], d["hold_p99_ms"] = holds.percentiles_ms(50, 99)
    d["hold_max_ms"] = holds.max_ms()
    return d


def fold_tenants(tenants: dict[str, dict[str, Any]], label: Callable[[str], str]) -> dict[str, dict[str, float]]:
    """``stats()["tenants"]`` summed into bounded labels (``pool.tenant_label``: the quota
    table's tenants, and "other"), for the metric exports: in use, waits and timeouts."""
    folded: dict[str, dict[str, float]] = {}
    for tenant, t in tenants.items():
        f = folded.setdefault(label(tenant), {"in_use": 0, "waits": 0, "timeouts": 0})
        for k in f:
            f[k] += t.get(k, 0) or 0
    return folded
