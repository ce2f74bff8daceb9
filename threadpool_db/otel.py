"""OpenTelemetry metrics for a pool, named as OpenTelemetry's database client semantic
conventions name them (``db.client.connection.*``; those conventions are still "Development"
status, so the names are written out here rather than imported from the incubating package).

``instrument(pool, meter_provider=None)`` (None: the global provider) works for a
``ConnectionPool`` (and a ``NullConnectionPool``), a ``RoutingPool`` (each of its pools, and
the route of each borrow) and SQLAlchemy's ``FairQueuePool`` (the pool under it). It depends
on ``opentelemetry-api`` only (the ``otel`` extra): the application brings the SDK, its
readers and exporters.

How it costs nothing when nobody collects: the counts (connections by state, the sizes, the
waiting borrowers, the timeouts, the leak counters) are *observable* instruments, read from
``pool.stats()`` only when a reader collects. The three histograms (create, wait and use time)
need a call on each borrow, return and connect: that observer is added to the pool only once
a real meter provider is there (the API's no-op one never collects, so with it the borrow cycle
does not change); with the global provider not set yet, it is added at the first collection.
Each histogram advises its own bucket boundaries, at the scale of what it times (see
``WAIT_BUCKETS`` and its neighbours below).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation

from .stats import fold_tenants

POOL = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
TENANT = "threadpool_db.tenant"
ROUTE = "threadpool_db.route"

# Observable instruments read from pool.stats(): (name, kind, unit, description, what to read).
_GAUGES: tuple[tuple[str, str, str, Callable[[dict[str, Any]], list[tuple[float, dict[str, str]]]]], ...] = (
    ("db.client.connection.count", "{connection}", "Connections open now, by state (idle, used)",
     lambda s: [(s["idle"], {STATE: "idle"}), (s["in_use"], {STATE: "used"})]),
    ("db.client.connection.idle.max", "{connection}", "The most idle connections the pool keeps (max_size)",
     lambda s: [(s["max_size"], {})]),
    ("db.client.connection.idle.min", "{connection}", "The fewest idle connections the pool keeps (min_size)",
     lambda s: [(s["min_size"], {})]),
    ("db.client.connection.max", "{connection}", "The most connections open at once (max_size)",
     lambda s: [(s["max_size"], {})]),
    ("db.client.connection.pending_requests", "{request}", "Borrowers waiting for a connection now",
     lambda s: [(s["waiting"], {})]),
    ("threadpool_db.tenant.connection.count", "{connection}", "Connections a tenant holds now",
     lambda s: [(t["in_use"], {TENANT: t["label"]}) for t in s.get("tenant_labels", [])]),
)  # fmt: skip
_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("db.client.connection.timeouts", "{timeout}", "Borrows that timed out", "timeouts"),
    ("threadpool_db.leaks.detected", "{leak}", "Suspected connection leaks reported", "leaks_detected"),
    ("threadpool_db.leaks.reclaimed", "{leak}", "Leaked connections taken back", "leaks_reclaimed"),
    ("threadpool_db.leaks.returned_late", "{leak}", "Reported leaks whose connection came back after all",
     "leaks_returned_late"),
    ("threadpool_db.config_errors", "{error}", "Borrows failed at once: the database refuses the configuration",
     "config_errors"),
)  # fmt: skip


# Bucket boundaries of the time histograms, in seconds, advised per instrument (the API's
# explicit_bucket_boundaries_advisory, opentelemetry-api 1.30+), the way the semantic
# conventions advise them for db.client.operation.duration (0.001 ... 10 s). They advise none
# for the pool's three times, and the SDK's default (0, 5, 10, 25 ... 10000, made for
# milliseconds) would put every one of them in its first two buckets. So, in 1-2.5-5 steps, at
# the scale of each; a View the application registers still overrides them:
# - waiting: a few microseconds from an idle pool, up to the borrow timeout (30 s by default);
WAIT_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # fmt: skip
# - creating: a TCP connect and password exchange, a millisecond on localhost, tens to hundreds
#   with TLS across a network, up to connect_timeout;
CREATE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# - using: a query or a request, from a hundred microseconds up to the leak threshold (60 s).
USE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
               10.0, 30.0, 60.0)  # fmt: skip


def _is_noop(provider: Any) -> bool:
    """Will this provider never collect? The API's no-op one; the global proxy until an SDK
    provider is set (then it is no more: checked again at the first collection)."""
    if isinstance(provider, NoOpMeterProvider):
        return True
    return type(provider).__name__ == "_ProxyMeterProvider" and getattr(provider, "_real_meter_provider", 1) is None


class _Instruments:
    """One set of instruments per meter provider, shared by every pool instrumented through it
    (an instrument name is registered once; the pool's name is an attribute). The observable
    ones' callbacks read every live pool registered here."""

    def __init__(self, provider: Any) -> None:
        from . import __version__

        meter = provider.get_meter("threadpool_db", __version__)
        self._lock = threading.Lock()  # guards pools
        self.pools: list[Instrumentation] = []
        for name, unit, description, read in _GAUGES:
            meter.create_observable_up_down_counter(name, callbacks=[self._gauge(read)], unit=unit,
                                                    description=description)  # fmt: skip
        for name, unit, description, key in _COUNTERS:
            meter.create_observable_counter(name, callbacks=[self._counter(key)], unit=unit, description=description)

        def hist(name: str, description: str, buckets: tuple[float, ...]) -> Any:
            return meter.create_histogram(name, unit="s", description=description,
                                          explicit_bucket_boundaries_advisory=buckets)  # fmt: skip

        self.wait = hist("db.client.connection.wait_time", "Time to obtain a connection", WAIT_BUCKETS)
        self.use = hist("db.client.connection.use_time", "Time a connection was held", USE_BUCKETS)
        self.create = hist("db.client.connection.create_time", "Time to create a connection", CREATE_BUCKETS)
        self.tenant_wait = hist("threadpool_db.tenant.wait_time", "A tenant's time to obtain a connection",
                                WAIT_BUCKETS)  # fmt: skip
        self.route_wait = hist("threadpool_db.routing.wait_time",
                               "A RoutingPool's time to obtain a connection, by route", WAIT_BUCKETS)  # fmt: skip

    def add(self, inst: Instrumentation) -> None:
        with self._lock:
            self.pools = [p for p in self.pools if p.alive()] + [inst]

    def _live(self) -> list[Instrumentation]:
        with self._lock:
            return list(self.pools)

    def _gauge(self, read: Callable[[dict[str, Any]], list[tuple[float, dict[str, str]]]]) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for inst in self._live():
                s = inst.stats()
                if s is not None:
                    out += [Observation(v, {**inst.attrs, **a}) for v, a in read(s)]
            return out

        return observe

    def _counter(self, key: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for inst in self._live():
                s = inst.stats()
                if s is not None:
                    out.append(Observation(int(s.get(key, 0) or 0), inst.attrs))
            return out

        return observe


# provider -> its instruments; weak, so a provider that is dropped (a test's) takes them along
_by_provider: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_by_provider_lock = threading.Lock()


def _instruments_for(provider: Any) -> _Instruments:
    with _by_provider_lock:
        made = _by_provider.get(provider)
        if made is None:
            made = _by_provider[provider] = _Instruments(provider)
        return made


class Instrumentation:
    """What ``instrument`` set up for one pool. The instruments read the pool while it lives (a
    weak reference: instrumenting does not keep a pool alive); the histograms' observer is put
    on the pool once a real provider is there (at once, or at the first collection)."""

    def __init__(self, pool: Any, instruments: _Instruments, provider: Any) -> None:
        self.name = pool.name
        self.attrs = {POOL: pool.name}
        self._ref = weakref.ref(pool)
        self._instruments = instruments
        self._lock = threading.Lock()  # guards _recording
        self._recording = False  # the histogram observer is on the pool
        instruments.add(self)
        if not _is_noop(provider):
            self._start_recording(pool)

    def alive(self) -> bool:
        return self._ref() is not None

    def _start_recording(self, pool: Any) -> None:
        with self._lock:
            if self._recording:
                return
            self._recording = True
        pool.add_observer(_Recorder(self._instruments, self.attrs))

    def stats(self) -> dict[str, Any] | None:
        """The pool's stats for a collection (None once the pool is gone); a collection also
        means a real provider is there, so the histograms start recording."""
        pool = self._ref()
        if pool is None:
            return None
        self._start_recording(pool)
        s = pool.stats()
        tenants = s.get("tenants") or {}
        if tenants:  # in use per tenant, folded into bounded labels as the Prometheus ones are
            folded = fold_tenants(tenants, pool.tenant_label)
            s["tenant_labels"] = [{"label": k, "in_use": int(f["in_use"])} for k, f in folded.items()]
        return s


class _Recorder:
    """The pool observer (pool.add_observer): the three histograms, and a tenant's wait."""

    def __init__(self, i: _Instruments, attrs: dict[str, str]) -> None:
        self.acquired = lambda seconds: i.wait.record(seconds, attrs)
        self.released = lambda seconds: i.use.record(seconds, attrs)
        self.connected = lambda seconds: i.create.record(seconds, attrs)
        self.tenant_acquired = lambda label, seconds: i.tenant_wait.record(seconds, {**attrs, TENANT: label})


class RoutingInstrumentation:
    """``instrument`` of a RoutingPool: each of its pools, and the route of every borrow."""

    def __init__(self, routing: Any, instruments: _Instruments, provider: Any) -> None:
        self.pools = [Instrumentation(p, instruments, provider) for p in (routing.primary, *routing.replicas)]
        attrs, hist = {POOL: routing.name}, instruments.route_wait

        class _Routes:
            @staticmethod
            def route_acquired(route: str, seconds: float) -> None:
                hist.record(seconds, {**attrs, ROUTE: route})

        routing.add_observer(_Routes)


def instrument(pool: Any, meter_provider: MeterProvider | None = None) -> Instrumentation | RoutingInstrumentation:
    """Report ``pool``'s metrics through OpenTelemetry: a ConnectionPool (or NullConnectionPool),
    a RoutingPool, or a FairQueuePool. ``meter_provider``: None for the global one (``metrics.set_meter_provider``)."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    instruments = _instruments_for(provider)
    core = getattr(pool, "core", None)  # a FairQueuePool: the threadpool_db pool under it
    if core is not None:
        pool = core
    if hasattr(pool, "primary") and hasattr(pool, "replicas"):
        return RoutingInstrumentation(pool, instruments, provider)
    if not hasattr(pool, "add_observer") or not hasattr(pool, "stats"):
        raise TypeError(f"instrument() takes a ConnectionPool or a RoutingPool, got {type(pool).__name__}")
    return Instrumentation(pool, instruments, provider)
