"""The sizing advisor: a recommended ``max_size``, with its reasoning, from measured data.

- Little's law: connections busy on average = arrival rate x mean hold time. We recommend
  twice that (HEADROOM) to absorb bursts, rounded up, at least 1.
- The database does useful work on about ``cores x 2 + spindles`` connections at once (the
  PostgreSQL wiki's rule of thumb, also HikariCP's). That total is shared by every worker
  process, so each worker's pool is capped at its share.
- A warning when ``workers x max_size`` exceeds what the server accepts: ``max_connections``
  minus the reserved slots.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

HEADROOM = 2.0


@dataclass
class Advice:
    recommended_max_size: int
    current_max_size: int
    arrival_rate_per_s: float
    mean_hold_ms: float
    busy_connections: float
    workers: int
    server_cores: int | None = None
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
    server_cores: int | None = None,
    spindles: int = 1,
    max_connections: int | None = None,
    reserved: int = 0,
) -> Advice:
    """A pure function of the measurements, so it can be tested on known answers."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    busy = max(0.0, arrival_rate) * max(0.0, mean_hold_s)
    by_load = max(1, math.ceil(busy * HEADROOM - 1e-9))
    why = [
        f"Little's law: {arrival_rate:.1f} borrows/s x {mean_hold_s * 1000:.2f} ms mean hold "
        f"= {busy:.2f} connections busy on average",
        f"x{HEADROOM:g} headroom for bursts -> {by_load}",
    ]
    a = Advice(by_load, current_max_size, round(arrival_rate, 3), round(mean_hold_s * 1000, 3), round(busy, 3),
               workers, server_cores)  # fmt: skip
    if server_cores:
        total = server_cores * 2 + spindles
        cap = max(1, total // workers)
        a.rule_of_thumb_total, a.per_worker_cap = total, cap
        why.append(f"(cores x 2) + spindles = ({server_cores} x 2) + {spindles} = {total} useful connections "
                   f"on the server, {cap} per worker for {workers} worker(s)")  # fmt: skip
        if by_load > cap:
            a.recommended_max_size = cap
            a.warnings.append(
                f"demand ({by_load}) exceeds what the database can use ({cap} per worker): more connections "
                "will not help; shorten the time connections are held, or scale the database"
            )
    if max_connections is not None:
        limit = max_connections - reserved
        a.server_limit = limit
        for size, what in ((current_max_size, "current"), (a.recommended_max_size, "recommended")):
            if workers * size > limit:
                a.warnings.append(
                    f"{workers} workers x {what} max_size {size} = {workers * size} exceeds the server's "
                    f"{max_connections} max_connections minus {reserved} reserved = {limit}"
                )
    if wait_p99_ms > 100 and by_load <= current_max_size:  # enough connections, yet long waits
        why.append(f"p99 wait is {wait_p99_ms:.0f} ms although the size looks enough: "
                   "look for long holds or leaks (pool.borrowed())")  # fmt: skip
    why.append(f"recommended max_size: {a.recommended_max_size} (now {current_max_size})")
    a.reasoning = why
    return a
