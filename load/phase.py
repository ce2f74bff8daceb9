"""One measured phase of the comparison (load/compare.py measures it, load/report.py shows it):
a record of its own, so neither of the two imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Phase:
    mode: str
    label: str = ""  # what the report calls it ("pooled, max_size 8", "recommended, max_size 3")
    max_size: int = 0
    rps: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    requests: int = 0
    failures: int = 0
    peak_conns: int = 0  # every client backend, sampled at 10 Hz: the server's own view
    peak_app_conns: int = 0  # those of this phase's app only
    conns_opened: int = 0
    refusals: dict[str, int] = field(default_factory=dict)  # "SQLSTATE message" -> count
    ok_rps: float = 0.0
    clients: int = 0  # pgbouncer mode: client connections the app hosts held at the end
    cpu: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    pool_stats: list[dict[str, Any]] = field(default_factory=list)
    max_ms: float = 0.0  # Locust's slowest response
    # where the time went, as the app measured it (all its workers): "app" (inside the app) and
    # "pool_wait" (waiting for a pooled connection), each {"n", "p50", "p99", "max"} in ms
    request_times: dict[str, dict[str, float]] = field(default_factory=dict)
    advice: dict[str, Any] = field(default_factory=dict)

    @property
    def error_pct(self) -> float:
        return 100.0 * self.failures / self.requests if self.requests else 0.0
