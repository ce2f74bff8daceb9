"""Prometheus metrics for pools, named after HikariCP's where they mean the same.

```python
from threadpool_db.metrics import PoolMetrics
PoolMetrics(pool)            # registers on prometheus_client's default registry
```

| metric | type | meaning |
|---|---|---|
| threadpool_db_connections | gauge | connections open (idle + active) |
| threadpool_db_connections_active | gauge | connections borrowed now |
| threadpool_db_connections_idle | gauge | connections idle now |
| threadpool_db_connections_pending | gauge | borrowers waiting now |
| threadpool_db_connections_max / _min | gauge | max_size / min_size |
| threadpool_db_connections_acquire_seconds | histogram | time to borrow |
| threadpool_db_connections_usage_seconds | histogram | time a connection was held |
| threadpool_db_connections_creation_seconds | histogram | time to open a connection |
| threadpool_db_connections_timeouts_total | counter | borrows that timed out |
| threadpool_db_connections_created_total / _closed_total / _create_errors_total | counter | lifecycle |
| threadpool_db_leaks_total | counter | suspected leaks reported |
| threadpool_db_leaks_reclaimed_total | counter | leaked connections reclaimed |
| threadpool_db_leaks_returned_total | counter | reported leaks whose connection came back |
| threadpool_db_config_error | gauge | 1 while the database refuses the pool's configuration |
| threadpool_db_threads / _sockets | gauge | the pool's live threads; its open sockets (one per connection) |
| threadpool_db_tenant_connections_active | gauge | connections a tenant holds now (``tenant`` label) |
| threadpool_db_tenant_waits_total / _timeouts_total | counter | a tenant's borrows that queued / timed out |
| threadpool_db_tenant_acquire_seconds | histogram | a tenant's time to borrow |
| threadpool_db_routing_borrows_total | counter | RoutingPool borrows by ``route`` (primary, replica) |
| threadpool_db_routing_acquire_seconds | histogram | RoutingPool time to borrow, by ``route`` |

Every series has a ``pool`` label. ``tenant`` values are the tenants of the pool's quota table
plus one ``other`` for the rest, so a label's values stay bounded.

Histograms are fed through the pool's observer seam (``pool.add_observer``): a pool without
metrics pays nothing for them. Gauges and counters are refreshed from ``pool.stats()``
by one daemon thread per PoolMetrics (every ``interval`` s, and on each scrape of a
single-process registry).

gunicorn and other pre-fork servers: set ``PROMETHEUS_MULTIPROC_DIR`` before the workers start
and serve ``MultiProcessCollector`` (the demo app's ``/metrics`` does); gauges are then kept per
live process (``multiprocess_mode="livesum"`` sums the workers).
"""

from __future__ import annotations

import os
import threading
import weakref
from time import monotonic
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .stats import fold_tenants

if TYPE_CHECKING:
    from .pool import ConnectionPool

P = "threadpool_db_"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_GAUGES = {
    "connections": ("size", "Connections open (idle + active)"),
    "connections_active": ("in_use", "Connections borrowed now"),
    "connections_idle": ("idle", "Connections idle now"),
    "connections_pending": ("waiting", "Borrowers waiting for a connection"),
    "connections_max": ("max_size", "The pool's max_size"),
    "connections_min": ("min_size", "The pool's min_size"),
    "threads": ("threads", "The pool's live threads (creators, housekeeper, watchdog, notifier)"),
    "sockets": ("sockets", "Sockets the pool holds open (one per connection)"),
}
_COUNTERS = {
    "connections_timeouts": ("timeouts", "Borrows that timed out"),
    "connections_created": ("created", "Connections opened"),
    "connections_closed": ("closed", "Connections closed"),
    "connections_create_errors": ("create_errors", "Failed connection attempts"),
    "leaks": ("leaks_detected", "Suspected connection leaks reported"),
    "leaks_reclaimed": ("leaks_reclaimed", "Leaked connections reclaimed"),
    "leaks_returned": ("leaks_returned_late", "Reported leaks whose connection came back after all"),
}
# One set of metric objects per registry, keyed by the registry itself, weakly: a registry's
# id() is reused once it is gone, and a new registry at a freed one's address must not get the
# dead one's metrics (registered there, not here). A registry that goes takes its set along.
_shared: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # guards _shared


def _metrics_for(registry: CollectorRegistry) -> dict[str, Any]:
    with _lock:
        m = _shared.get(registry)
        if m is None:
            multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
            gauge_kw: dict[str, Any] = {"multiprocess_mode": "livesum"} if multiproc else {}
            m = {name: Gauge(P + name, doc, ["pool"], registry=registry, **gauge_kw)
                 for name, (_, doc) in _GAUGES.items()}  # fmt: skip
            for name, (_, doc) in _COUNTERS.items():
                m[name] = Counter(P + name, doc, ["pool"], registry=registry)
            for name, doc in (("connections_acquire_seconds", "Time to borrow a connection"),
                              ("connections_usage_seconds", "Time a connection was held"),
                              ("connections_creation_seconds", "Time to open a connection")):  # fmt: skip
                m[name] = Histogram(P + name, doc, ["pool"], registry=registry, buckets=BUCKETS)
            m["config_error"] = Gauge(P + "config_error", "1 while the database refuses the pool's configuration",
                                      ["pool"], registry=registry, **gauge_kw)  # fmt: skip
            m["tenant_active"] = Gauge(P + "tenant_connections_active", "Connections a tenant holds now",
                                       ["pool", "tenant"], registry=registry, **gauge_kw)  # fmt: skip
            m["tenant_waits"] = Counter(P + "tenant_waits", "A tenant's borrows that had to queue",
                                        ["pool", "tenant"], registry=registry)  # fmt: skip
            m["tenant_timeouts"] = Counter(P + "tenant_timeouts", "A tenant's borrows that timed out",
                                           ["pool", "tenant"], registry=registry)  # fmt: skip
            m["tenant_acquire"] = Histogram(P + "tenant_acquire_seconds", "A tenant's time to borrow",
                                            ["pool", "tenant"], registry=registry, buckets=BUCKETS)  # fmt: skip
            m["route_borrows"] = Counter(P + "routing_borrows", "RoutingPool borrows by route",
                                         ["pool", "route"], registry=registry)  # fmt: skip
            m["route_acquire"] = Histogram(P + "routing_acquire_seconds", "RoutingPool time to borrow by route",
                                           ["pool", "route"], registry=registry, buckets=BUCKETS)  # fmt: skip
            _shared[registry] = m
        return m


class _Observer:
    """What the pool tells PoolMetrics on each borrow, return and connect (pool.add_observer)."""

    def __init__(self, m: dict[str, Any], name: str) -> None:
        self.acquired = m["connections_acquire_seconds"].labels(pool=name).observe
        self.released = m["connections_usage_seconds"].labels(pool=name).observe
        self.connected = m["connections_creation_seconds"].labels(pool=name).observe
        tenant = m["tenant_acquire"]
        self.tenant_acquired = lambda label, secs: tenant.labels(pool=name, tenant=label).observe(secs)


class PoolMetrics:
    """Export one pool's metrics. ``close()`` (or the pool being collected) stops the updater."""

    def __init__(self, pool: ConnectionPool, registry: CollectorRegistry = REGISTRY, interval: float = 1.0) -> None:
        self._m = _metrics_for(registry)
        self.name = pool.name
        self._last: dict[str, float] = {}
        self._ref = weakref.ref(pool)
        self._stop = threading.Event()
        self._update_lock = threading.Lock()
        for name in _COUNTERS:  # a labelled child per counter, so each shows from 0 on
            self._m[name].labels(pool=self.name)
        pool.add_observer(_Observer(self._m, self.name))
        self.update()
        self._thread = threading.Thread(target=self._run, args=(interval,), name=f"{pool.name}-metrics", daemon=True)
        self._thread.start()

    def update(self) -> None:
        pool = self._ref()
        if pool is None:
            return
        s = pool.stats()
        with self._update_lock:
            for name, (key, _) in _GAUGES.items():
                self._m[name].labels(pool=self.name).set(s.get(key, 0))
            for name, (key, _) in _COUNTERS.items():
                now = float(s.get(key, 0) or 0)
                delta = now - self._last.get(key, 0.0)
                if delta > 0:
                    self._m[name].labels(pool=self.name).inc(delta)
                self._last[key] = now
            self._m["config_error"].labels(pool=self.name).set(1 if s.get("config_error") else 0)
            # tenants, folded into bounded labels: the quota table's tenants, and "other"
            for label, f in fold_tenants(s.get("tenants") or {}, pool.tenant_label).items():
                self._m["tenant_active"].labels(pool=self.name, tenant=label).set(f["in_use"])
                for key, metric in (("waits", "tenant_waits"), ("timeouts", "tenant_timeouts")):
                    mark = f"tenant:{label}:{key}"
                    delta = f[key] - self._last.get(mark, 0.0)
                    if delta > 0:
                        self._m[metric].labels(pool=self.name, tenant=label).inc(delta)
                    self._last[mark] = f[key]

    def _run(self, interval: float) -> None:
        next_at = monotonic()
        while not self._stop.wait(max(0.0, next_at - monotonic())):
            if self._ref() is None:
                return
            self.update()
            next_at = monotonic() + interval

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class _RouteObserver:
    """Told of each RoutingPool borrow (its add_observer seam): the acquire-time histogram."""

    def __init__(self, m: dict[str, Any], name: str, routes: Any) -> None:
        self._observe = {route: m["route_acquire"].labels(pool=name, route=route).observe for route in routes}

    def route_acquired(self, route: str, seconds: float) -> None:
        self._observe[route](seconds)


class RoutingMetrics:
    """A RoutingPool's borrows and acquire time by ``route`` (primary, replica). Export each of
    its pools with PoolMetrics as well for their own gauges."""

    def __init__(self, routing: Any, registry: CollectorRegistry = REGISTRY, interval: float = 1.0) -> None:
        self._m = _metrics_for(registry)
        self.name = routing.name
        self._ref = weakref.ref(routing)
        self._last: dict[str, float] = {}
        for route in routing.acquire_windows:  # a labelled child per route, so each shows from 0 on
            self._m["route_borrows"].labels(pool=self.name, route=route)
        routing.add_observer(_RouteObserver(self._m, self.name, routing.acquire_windows))
        self._stop = threading.Event()
        self.update()
        self._thread = threading.Thread(target=self._run, args=(interval,), name=f"{self.name}-metrics", daemon=True)
        self._thread.start()

    def update(self) -> None:
        routing = self._ref()
        if routing is None:
            return
        s = routing.stats()
        counts = {"primary": s["writes"] + s["primary_reads"], "replica": s["replica_reads"]}
        for route, n in counts.items():
            delta = n - self._last.get(route, 0.0)
            if delta > 0:
                self._m["route_borrows"].labels(pool=self.name, route=route).inc(delta)
            self._last[route] = n

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self._ref() is None:
                return
            self.update()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
