"""What a pool says about itself, mixed into ConnectionPool: stats(), advise(), the leak
diagnostics, its repr and the PoolTimeout message. Nothing here changes the pool."""

from __future__ import annotations

import logging
import os
from collections import deque
from time import monotonic
from typing import Any

from .advisor import recommend
from .base import Slot
from .redact import scrub

logger = logging.getLogger("threadpool_db")


class Introspection:
    """Mixin: reporting. Uses ConnectionPool's state (see pool.py)."""

    _lock: Any
    _pool: deque[Slot]
    _waiting: deque[Any]

    def _timeout_message_locked(self, timeout: float) -> str:
        idle = len(self._pool)
        msg = (
            f"pool {self.name!r}: no connection available within {timeout:g} s "
            f"(size={self._nconns}, in_use={self._nconns - idle}, idle={idle}, "
            f"waiting={len(self._waiting)}, max_size={self.max_size}); "
            f"last connection error: {self._last_error or 'none'}"
        )
        if self._leaks is not None:
            msg += self._leaks.holders_summary_locked()
        return msg

    def stats(self) -> dict[str, Any]:
        """A flat dict of counts, counters and recent wait/hold percentiles (ms)."""
        with self._lock:
            idle = len(self._pool)
            d: dict[str, Any] = {
                "name": self.name,
                "pid": os.getpid(),
                "size": self._nconns,
                "idle": idle,
                "in_use": self._nconns - idle,
                "waiting": len(self._waiting),
                "growing": self._growing,
                "min_size": self.min_size,
                "max_size": self.max_size,
                "borrows": self._borrows,
                "waits": self._waits,
                "timeouts": self._timeouts,
                "rejected": self._rejected,
                "created": self._created,
                "closed": self._closed_count,
                "create_errors": self._create_errors,
                "discarded_broken": self._discarded_broken,
                "check_failed": self._check_failed,
                "reset_failed": self._reset_failed,
                "expired": self._expired,
                "idle_closed": self._idle_closed,
                "housekeeper_runs": self._housekeeper_runs,
                "last_error": self._last_error,
                "config_error": self._config_error,
                "config_errors": self._config_errors,
                "pool_closed": self._closed,
            }
            if self._leaks is not None:
                d.update(self._leaks.stats_locked())
            if self.burst_size is not None:
                d["burst_size"], d["bursting"] = self.burst_size, self._bursting
            if not self._plain:
                d["tenants"] = self._tenants.stats()
            # resources the pool holds: its threads alive, and its sockets (one per connection)
            d["sockets"] = self._nconns
        d["threads"] = sum(t.is_alive() for t in self._threads) + sum(
            t is not None and t.is_alive() for t in (
                self._leaks.thread if self._leaks is not None else None,
                self._futures.thread if self._futures is not None else None,
            )
        )  # fmt: skip
        d["wait_p50_ms"], d["wait_p99_ms"] = self._wait_window.percentiles_ms(50, 99)
        d["wait_max_ms"] = self._wait_window.max_ms()
        d["hold_p50_ms"], d["hold_p99_ms"] = self._hold_window.percentiles_ms(50, 99)
        d["hold_max_ms"] = self._hold_window.max_ms()
        return d

    # psycopg_pool's names for the same facts: get_stats() and pop_stats().
    def get_stats(self) -> dict[str, int]:
        """psycopg_pool's stats: the counters since the last ``pop_stats()``, and the sizes now."""
        with self._lock:
            counters = self._psycopg_counters_locked()
            base = self._stats_base
            d = {k: int(v - base.get(k, 0)) for k, v in counters.items()}
            measures = self._psycopg_measures_locked()
        # as psycopg_pool: counters still at zero are left out, measures are always there
        return {**{k: v for k, v in d.items() if v}, **measures}

    def pop_stats(self) -> dict[str, int]:
        """As ``get_stats()``, and start the counters again from zero (``stats()`` and the
        Prometheus counters keep their totals)."""
        with self._lock:
            counters = self._psycopg_counters_locked()
            base, self._stats_base = self._stats_base, counters
            d = {k: int(v - base.get(k, 0)) for k, v in counters.items()}
            measures = self._psycopg_measures_locked()
        return {**{k: v for k, v in d.items() if v}, **measures}

    def _psycopg_counters_locked(self) -> dict[str, float]:
        errors = self._timeouts + self._rejected + self._config_errors
        return {
            "requests_num": self._borrows + errors,
            "requests_queued": self._waits,
            "requests_wait_ms": self._wait_sum * 1000.0,
            "requests_errors": errors,
            "usage_ms": self._usage_sum * 1000.0,
            "returns_bad": self._returns_bad,
            "connections_num": self._created + self._create_errors,
            "connections_ms": self._connect_sum * 1000.0,
            "connections_errors": self._create_errors,
            "connections_lost": self._check_failed,
        }

    def _psycopg_measures_locked(self) -> dict[str, int]:
        return {
            "pool_min": self.min_size,
            "pool_max": self.max_size,
            "pool_size": self._nconns,
            "pool_available": len(self._pool),
            "requests_waiting": len(self._waiting),
        }

    def advise(
        self, workers: int = 1, server_cores: int | None = None, spindles: int = 1, query_server: bool = True
    ) -> dict[str, Any]:
        """A recommended max_size with its reasoning, from what this pool measured (see
        advisor.py). ``workers``: processes that each run such a pool against the same server.
        With ``query_server`` it asks the server for max_connections and reserved slots; the
        server's cores are taken from this machine when the server is on loopback."""
        now = monotonic()
        with self._lock:
            samples = [(t, n) for t, n in self._rate if t >= now - 60.0]
            borrows = self._borrows
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            rate = (borrows - samples[0][1]) / (now - samples[0][0])
        else:
            rate = borrows / max(now - self._opened_at, 1e-3) if self._opened_at else 0.0
        facts = dict(self._server_facts)
        if query_server and self._driver.name == "psycopg" and not self._closed:
            try:
                with self.connection(timeout=2.0) as conn:
                    facts["max_connections"] = int(conn.execute("SHOW max_connections").fetchone()[0])
                    rows = conn.execute(
                        "SELECT coalesce(sum(setting::int), 0) FROM pg_settings "
                        "WHERE name IN ('superuser_reserved_connections', 'reserved_connections')"
                    ).fetchone()
                    facts["reserved"] = int(rows[0])
                self._server_facts = facts
            except Exception as e:
                logger.info("pool %r: advise could not ask the server: %s", self.name, self._scrub(str(e)))
        if server_cores is None and self._target.split(":")[0] in ("127.0.0.1", "localhost", "::1"):
            server_cores = os.cpu_count()
        advice = recommend(
            arrival_rate=rate, mean_hold_s=self._hold_window.mean(), current_max_size=self.max_size,
            workers=workers, wait_p99_ms=self._wait_window.percentiles_ms(99)[0], server_cores=server_cores,
            spindles=spindles, max_connections=facts.get("max_connections"), reserved=facts.get("reserved", 0),
        )  # fmt: skip
        return advice.as_dict()

    def connect_attempts(self) -> list[float]:
        """Monotonic timestamps of the recent connection attempts (to see the backoff)."""
        with self._lock:
            return list(self._connect_attempts)

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def __repr__(self) -> str:
        idle = len(self._pool)
        return (
            f"<ConnectionPool {self.name!r} {self._target} size={self._nconns} idle={idle} "
            f"in_use={self._nconns - idle} waiting={len(self._waiting)} closed={self._closed}>"
        )

    def leaks(self) -> list[dict[str, Any]]:
        """Current leak suspects (see the README); empty when leak detection is off."""
        return self._leaks.leaks() if self._leaks is not None else []

    def leak_reports(self) -> list[dict[str, Any]]:
        """The last 100 leak reports, including leaks since returned; oldest first."""
        return self._leaks.reports() if self._leaks is not None else []

    def borrowed(self) -> list[dict[str, Any]]:
        """One record per connection out now: thread, held for, borrow site, holder stack."""
        from .leaks import describe_borrowed

        return describe_borrowed(self)
