"""Bounded windows of recent samples, for percentiles that cost nothing to record."""

from __future__ import annotations

from collections import deque

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
