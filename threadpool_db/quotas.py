"""Who gets the next connection: tenant quotas and priorities.

A plain pool (no quotas, no priorities) serves its queue strictly FIFO and never calls into
this module. Once quotas are configured or a borrower passes a priority, the pool serves the
waiter with the highest *effective* priority among those whose tenant is under quota; ties go
to the one that waited longest. Effective priority is the given priority plus one level per
``aging`` seconds of waiting, so low priority never starves.

Invariant kept by the pool: while a connection sits idle, no waiter in the queue is eligible
(each grant, return, discard and quota release dispatches idle connections to eligible
waiters). So a new borrower may take an idle connection whenever its own tenant is under quota.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol


class _QueuedWaiter(Protocol):
    tenant: str | None
    priority: float
    since: float


def check_request(tenant: object, priority: object) -> None:
    """A borrow's ``tenant`` (a str or None) and ``priority`` (a number or None), or ValueError."""
    if tenant is not None and not isinstance(tenant, str):
        raise ValueError(f"tenant must be a str or None, got {type(tenant).__name__}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, (int, float))):
        raise ValueError(f"priority must be a number or None, got {type(priority).__name__}")


class TenantBook:
    """Per-tenant limits and counts (connections out now, and counters). Guarded by the pool
    lock: every method is called with it held."""

    def __init__(self, limits: dict[str, int] | None, default: int | None) -> None:
        # validated by config.PoolConfig
        self.limits = dict(limits or {})
        self.default = default
        self.out: dict[str, int] = {}
        self.counters: dict[str, dict[str, int]] = {}

    @property
    def active(self) -> bool:
        return bool(self.limits) or self.default is not None

    def limit(self, tenant: str) -> int | None:
        return self.limits.get(tenant, self.default)

    def under_quota(self, tenant: str | None) -> bool:
        if tenant is None:
            return True
        lim = self.limit(tenant)
        return lim is None or self.out.get(tenant, 0) < lim

    def count(self, tenant: str | None, key: str) -> None:
        if tenant is not None:
            c = self.counters.setdefault(tenant, {"borrows": 0, "waits": 0, "timeouts": 0, "rejected": 0})
            c[key] += 1

    def take(self, tenant: str | None) -> None:
        if tenant is not None:
            self.out[tenant] = self.out.get(tenant, 0) + 1
            self.count(tenant, "borrows")

    def release(self, tenant: str | None) -> None:
        if tenant is not None:
            n = self.out.get(tenant, 1) - 1
            if n > 0:
                self.out[tenant] = n
            else:
                self.out.pop(tenant, None)

    def reset_in_use(self) -> None:
        """After a fork, in the child: the borrows counted here are the parent's."""
        self.out.clear()

    def stats(self) -> dict[str, dict[str, Any]]:
        names = set(self.out) | set(self.counters) | set(self.limits)
        return {
            t: {"in_use": self.out.get(t, 0), "limit": self.limit(t), **self.counters.get(t, {})} for t in sorted(names)
        }


def pick(waiting: deque[Any], book: TenantBook, now: float, aging: float) -> Any | None:
    """Remove and return the waiter to serve next, or None if none is eligible."""
    best = None
    best_eff = 0.0
    for w in waiting:
        if not book.under_quota(w.tenant):
            continue  # at quota: it waits, but does not hold up the waiters behind it
        eff = w.priority + (now - w.since) / aging
        if best is None or eff > best_eff:  # strictly greater: among equals the oldest wins
            best, best_eff = w, eff
    if best is not None:
        waiting.remove(best)
    return best


def eligible(waiting: Iterable[_QueuedWaiter], book: TenantBook) -> int:
    """How many waiters could use a new connection now (for growth decisions)."""
    return sum(1 for w in waiting if book.under_quota(w.tenant))
