"""Where a request's time goes, as the app sees it: its time inside the app, and the part of it
spent waiting for a pooled connection. What a client measures beyond the app's own time was
spent before the app: in the kernel's accept backlog and gunicorn's gthread queue, waiting for a
free thread (the load report puts the three side by side).

A fixed set of logarithmic buckets per measure (a histogram) keeps this cheap on the request
path and mergeable across workers: each worker publishes its counts, the report adds them up."""

from __future__ import annotations

import threading
from typing import Any

# bucket upper bounds in ms: 0.05 ms .. about 5 minutes, each 25% above the one before
BOUNDS: list[float] = []
_b = 0.05
while _b < 300_000:
    BOUNDS.append(round(_b, 4))
    _b *= 1.25
del _b


class Histogram:
    """Counts of durations (ms) per bucket, and the exact maximum. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _counts and _max
        self._counts = [0] * (len(BOUNDS) + 1)
        self._max = 0.0

    def record(self, ms: float) -> None:
        lo, hi = 0, len(BOUNDS)
        while lo < hi:  # the first bound >= ms
            mid = (lo + hi) // 2
            if BOUNDS[mid] < ms:
                lo = mid + 1
            else:
                hi = mid
        with self._lock:
            self._counts[lo] += 1
            if ms > self._max:
                self._max = ms

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"counts": list(self._counts), "max": self._max}


def summary(snapshots: list[dict[str, Any]]) -> dict[str, float]:
    """p50, p99 (a bucket's upper bound: at most 25% high) and the exact max of the merged
    snapshots; {} when they counted nothing."""
    counts = [0] * (len(BOUNDS) + 1)
    top = 0.0
    for snap in snapshots:
        for i, n in enumerate(snap.get("counts", [])):
            counts[i] += n
        top = max(top, float(snap.get("max", 0.0)))
    total = sum(counts)
    if not total:
        return {}

    def pct(p: float) -> float:
        need, seen = p / 100.0 * total, 0
        for i, n in enumerate(counts):
            seen += n
            if seen >= need:
                return min(BOUNDS[i] if i < len(BOUNDS) else top, top)
        return top

    return {"n": total, "p50": round(pct(50), 1), "p99": round(pct(99), 1), "max": round(top, 1)}
