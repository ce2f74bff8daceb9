"""The sizing advisor: one recommended ``max_size``, with its reasoning, from measured demand
and what the database server can take.

- Demand is every borrow attempt, served or not: borrows, timeouts and refusals (a pool that
  is too small turns demand into timeouts, and counting only the borrows would hide it).
- Little's law: connections busy on average = attempt rate x mean hold time. We recommend
  twice that (HEADROOM), rounded up, at least 1.
- The wait distribution decides whether shrinking is safe: while borrowers wait (p99 wait over
  WAIT_OK_MS) or time out, the advice does not go below the current size.
- Then the server bounds it, shared by ``workers`` pools. ``max_connections`` minus the reserved
  slots is where the server refuses: a hard limit, never exceeded (a warning says when the
  current size does). ``(cores x 2) + spindles`` is how many connections the server can *run*
  at once: the advice does not grow a pool past its share of that, since more connections
  would wait on the server's CPU rather than in the pool. It does not shrink a pool below its
  current size for it either: a connection is also held while the app works between queries,
  so a pool above that share can be what the measurements show is used (on a 2-core machine
  running app and server, shrinking to the share lost a third of the throughput). So there is
  one recommendation, and no warning contradicts it.
- With too little traffic measured (under MIN_ATTEMPTS borrow attempts) it says so, and keeps
  the current size rather than size from noise.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger("threadpool_db")
HEADROOM = 2.0
WAIT_OK_MS = 10.0  # p99 borrow wait under which the pool is not holding anybody up
MIN_ATTEMPTS = 50  # borrow attempts measured before the advice sizes from them


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
    enough_data: bool = True  # False: too little traffic measured; the advice keeps the current size
    attempts: int | None = None  # borrow attempts the rates come from (None: not given)
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
    attempts: int | None = None,
) -> Advice:
    """A pure function of the measurements, so it can be tested on known answers.
    ``arrival_rate``: borrow attempts per second (served, timed out or refused); ``attempts``:
    how many attempts that rate was measured over (None: enough, as the caller knows)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    busy = max(0.0, arrival_rate) * max(0.0, mean_hold_s)
    a = Advice(current_max_size, current_max_size, round(arrival_rate, 3), round(mean_hold_s * 1000, 3),
               round(busy, 3), workers, round(timeout_rate, 3), round(wait_p99_ms, 1), server_cores, cores_of,
               attempts=attempts)  # fmt: skip
    why: list[str] = []
    # The server's bounds, per pool (each of the workers has one).
    caps: list[tuple[int, str]] = []
    if server_cores:
        total = server_cores * 2 + spindles
        a.rule_of_thumb_total, a.per_worker_cap = total, max(1, total // workers)
        whose = f"the database server's {server_cores} cores ({cores_of or 'given'})"
        why.append(f"server side: (cores x 2) + spindles = ({server_cores} x 2) + {spindles} = {total} connections "
                   f"the database can work on at once, from {whose}; over {workers} worker(s): "
                   f"{a.per_worker_cap} each")  # fmt: skip
    if max_connections is not None:
        limit = max_connections - reserved
        a.server_limit = limit
        caps.append((max(1, limit // workers), f"the server's max_connections {max_connections} minus {reserved} "
                                               f"reserved = {limit}, shared by {workers} worker(s)"))  # fmt: skip
        if workers * current_max_size > limit:
            a.warnings.append(f"{workers} workers x current max_size {current_max_size} = "
                              f"{workers * current_max_size} exceeds the server's {max_connections} "
                              f"max_connections minus {reserved} reserved = {limit}: connects will be refused "
                              "with 'too many clients'")  # fmt: skip
    if attempts is not None and attempts < MIN_ATTEMPTS:
        a.enough_data = False
        why.insert(0, f"too little traffic measured to size the pool: {attempts} borrow attempt(s), at least "
                      f"{MIN_ATTEMPTS} needed; keeping the current {current_max_size}")  # fmt: skip
        why.append(f"recommended max_size: {current_max_size} (now {current_max_size}; run it under load, then ask)")
        a.reasoning = why
        return a
    by_load = max(1, math.ceil(busy * HEADROOM - 1e-9))
    why[:0] = [
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
    cores_cap = a.per_worker_cap
    if cores_cap is not None and rec > cores_cap:
        keep = max(cores_cap, min(rec, current_max_size))
        if keep < rec:
            why.append(f"not growing past {keep}: more connections than the server's cores can run "
                       f"({a.rule_of_thumb_total} in all, {cores_cap} per worker) would wait on its CPU, not in the "
                       "pool, where the wait is bounded and visible")  # fmt: skip
        else:
            why.append(f"{rec} is above this worker's share of what the server's cores can run at once "
                       f"({cores_cap}); kept, not shrunk for it: the measured holds include the app's own time "
                       "between queries, so the pool uses more connections than the server runs at once")  # fmt: skip
        rec = keep
    for cap, what in caps:
        if rec > cap:
            why.append(f"capped at {cap}: {what}")
            rec = cap
    if wait_p99_ms > 100 and by_load <= current_max_size:  # enough connections, yet long waits
        why.append(f"p99 wait is {wait_p99_ms:.0f} ms although the size looks enough: "
                   "look for long holds or leaks (pool.borrowed())")  # fmt: skip
    why.append(f"recommended max_size: {rec} (now {current_max_size})")
    a.recommended_max_size = rec
    a.reasoning = why
    return a


# -- what the pool feeds it ------------------------------------------------------------------
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Measured:
    """What a pool measured, taken under its lock in one go (see ConnectionPool.advise)."""

    now: float
    samples: list[tuple[float, int, int]]  # (when, attempts so far, unserved so far), the last minute
    attempts: int  # borrow attempts since open, timeouts and refusals included
    timeouts: int  # of those, not served
    opened_at: float
    mean_hold_s: float
    wait_p99_ms: float
    max_size: int
    target: str  # host:port/dbname: a loopback host means this machine's cores are the server's


def ask_server(conn: Any) -> dict[str, int]:
    """The server's ``max_connections`` and its reserved slots, through a borrowed connection."""
    mc = int(conn.execute("SHOW max_connections").fetchone()[0])
    row = conn.execute(
        "SELECT coalesce(sum(setting::int), 0) FROM pg_settings "
        "WHERE name IN ('superuser_reserved_connections', 'reserved_connections')"
    ).fetchone()
    return {"max_connections": mc, "reserved": int(row[0])}


class ServerFacts:
    """What one pool's server said of its limits (``ask_server``), kept: a server that cannot
    be asked now is judged by what it said before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _facts (advise may run on several threads)
        self._facts: dict[str, int] = {}

    def read(self, borrow: Callable[..., Any] | None, pool_name: str, redact: Callable[[str], str]) -> dict[str, int]:
        """Ask again through ``borrow`` (a pool's ``connection``; None: don't), then the facts."""
        if borrow is not None:
            try:
                with borrow(timeout=2.0) as conn:
                    facts = ask_server(conn)
                with self._lock:
                    self._facts = facts
            except Exception as e:
                logger.info("pool %r: advise could not ask the server: %s", pool_name, redact(str(e)))
        with self._lock:
            return dict(self._facts)


def advise(m: Measured, *, workers: int, server_cores: int | None, spindles: int,
           facts: dict[str, int]) -> Advice:  # fmt: skip
    """The demand rates from the pool's samples (the last minute, else since open), the
    server's cores (this machine's when the server is on loopback), then ``recommend``."""
    s = m.samples
    if len(s) >= 2 and s[-1][0] > s[0][0]:
        span = m.now - s[0][0]
        measured = m.attempts - s[0][1]
        rate, timeout_rate = measured / span, (m.timeouts - s[0][2]) / span
    elif m.opened_at:
        span = max(m.now - m.opened_at, 1e-3)
        measured, rate, timeout_rate = m.attempts, m.attempts / span, m.timeouts / span
    else:
        measured, rate, timeout_rate = 0, 0.0, 0.0
    cores_of = "given" if server_cores is not None else None
    if server_cores is None and m.target.split(":")[0] in LOOPBACK:
        server_cores, cores_of = os.cpu_count(), "this machine's: the server is on loopback"
    return recommend(arrival_rate=rate, mean_hold_s=m.mean_hold_s, current_max_size=m.max_size, workers=workers,
                     wait_p99_ms=m.wait_p99_ms, timeout_rate=timeout_rate, server_cores=server_cores,
                     cores_of=cores_of, spindles=spindles, max_connections=facts.get("max_connections"),
                     reserved=facts.get("reserved", 0), attempts=measured)  # fmt: skip
