"""The sizing advisor: a recommended ``max_size``, with its reasoning, from measured demand.

- Demand is every borrow attempt, served or not: borrows, timeouts and refusals (a pool that
  is too small turns demand into timeouts, and counting only the borrows would hide it).
- Little's law: connections busy on average = attempt rate x mean hold time. We recommend
  twice that (HEADROOM), rounded up, at least 1.
- The wait distribution decides whether shrinking is safe: while borrowers wait (p99 wait over
  WAIT_OK_MS) or time out, the advice never goes below the current size, since the measurements
  show that the size now is already not enough at the moment.
- ``(cores x 2) + spindles`` is about the *database server*: how many connections it can
  use at once. Over it, more connections add contention, not throughput. It is a warning that
  names whose cores it counted, not a cap on the advice.
- A warning when ``workers x max_size`` exceeds what the server accepts: ``max_connections``
  minus the reserved slots.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

HEADROOM = 2.0
WAIT_OK_MS = 10.0  # p99 borrow wait under which the pool is not holding anybody up


@dataclass
class Advice:
    recommended_max_size: int
    current_max_size: int
    arrival_rate_per_s: float  # borrow attempts, timeouts and refusals included
    mean_hold_ms: float
    busy_connections: float
    workers: int
    timeouts_per_s: float = 0.0
    wait_p99_ms: float = 0.0
    server_cores: int | None = None
    cores_of: str | None = None  # whose cores: "this machine (the server is on loopback)", "given"
    rule_of_thumb_total: int | None = None
    per_worker_cap: int | None = None
    server_limit: int | None = None
    warnings: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recommend(
    *,
    arrival_rate: float,
    mean_hold_s: float,
    current_max_size: int,
    workers: int = 1,
    wait_p99_ms: float = 0.0,
    timeout_rate: float = 0.0,
    server_cores: int | None = None,
    cores_of: str | None = None,
    spindles: int = 1,
    max_connections: int | None = None,
    reserved: int = 0,
) -> Advice:
    """A pure function of the measurements, so it can be tested on known answers.
    ``arrival_rate``: borrow attempts per second (served, timed out or refused)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    busy = max(0.0, arrival_rate) * max(0.0, mean_hold_s)
    by_load = max(1, math.ceil(busy * HEADROOM - 1e-9))
    why = [
        f"Little's law: {arrival_rate:.1f} borrow attempts/s (timeouts included) x {mean_hold_s * 1000:.2f} ms "
        f"mean hold = {busy:.2f} connections busy on average",
        f"x{HEADROOM:g} headroom for bursts -> {by_load}",
    ]
    rec = by_load
    waiting = wait_p99_ms > WAIT_OK_MS or timeout_rate > 0
    if waiting and rec < current_max_size:
        rec = current_max_size
        why.append(f"borrowers wait now (p99 wait {wait_p99_ms:.1f} ms, {timeout_rate:.1f} timeouts/s): "
                   f"not shrinking below the current {current_max_size}")  # fmt: skip
    elif waiting:
        why.append(f"borrowers wait now (p99 wait {wait_p99_ms:.1f} ms, {timeout_rate:.1f} timeouts/s)")
    a = Advice(rec, current_max_size, round(arrival_rate, 3), round(mean_hold_s * 1000, 3), round(busy, 3),
               workers, round(timeout_rate, 3), round(wait_p99_ms, 1), server_cores, cores_of)  # fmt: skip
    if server_cores:
        total = server_cores * 2 + spindles
        a.rule_of_thumb_total, a.per_worker_cap = total, max(1, total // workers)
        whose = f"the database server's {server_cores} cores ({cores_of or 'given'})"
        why.append(f"server side: (cores x 2) + spindles = ({server_cores} x 2) + {spindles} = {total} connections "
                   f"the database can use at once, from {whose}")  # fmt: skip
        if workers * rec > total:
            a.warnings.append(
                f"{workers} workers x max_size {rec} = {workers * rec} connections exceeds the {total} that "
                f"{whose} can work on at once: past that, more connections add contention on the server, "
                "not throughput (a warning about the server, not a limit on this pool)"
            )
    if max_connections is not None:
        limit = max_connections - reserved
        a.server_limit = limit
        for size, what in ((current_max_size, "current"), (rec, "recommended")):
            if workers * size > limit:
                a.warnings.append(
                    f"{workers} workers x {what} max_size {size} = {workers * size} exceeds the server's "
                    f"{max_connections} max_connections minus {reserved} reserved = {limit}"
                )
    if wait_p99_ms > 100 and by_load <= current_max_size:  # enough connections, yet long waits
        why.append(f"p99 wait is {wait_p99_ms:.0f} ms although the size looks enough: "
                   "look for long holds or leaks (pool.borrowed())")  # fmt: skip
    why.append(f"recommended max_size: {rec} (now {current_max_size})")
    a.reasoning = why
    return a
