"""OpenTelemetry metrics (threadpool_db.otel) read back through the SDK's InMemoryMetricReader,
against the real server: names, units and attributes as the database semantic conventions give
them, counts that follow borrows and returns, timeouts, and the time histograms."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from threadpool_db import ConnectionPool, PoolTimeout
from threadpool_db.otel import instrument

from .fakes import Factory

# The attributes as the conventions spell them, written out: a test that imported otel.py's
# constants would compare them with themselves.
POOL = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

CONVENTIONS = {  # name: unit, as the database client semantic conventions give them
    "db.client.connection.count": "{connection}",
    "db.client.connection.idle.max": "{connection}",
    "db.client.connection.idle.min": "{connection}",
    "db.client.connection.max": "{connection}",
    "db.client.connection.pending_requests": "{request}",
    "db.client.connection.timeouts": "{timeout}",
    "db.client.connection.create_time": "s",
    "db.client.connection.wait_time": "s",
    "db.client.connection.use_time": "s",
}


@pytest.fixture
def otel() -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def _collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    out: dict[str, Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out


def _points(metric: Any, **attrs: str) -> list[Any]:
    return [p for p in metric.data.data_points if all(p.attributes.get(k) == v for k, v in attrs.items())]


def _value(metrics: dict[str, Any], name: str, **attrs: str) -> float:
    (point,) = _points(metrics[name], **attrs)
    return point.value


def test_names_units_and_attributes_follow_the_conventions(make_pool, otel):
    provider, reader = otel
    pool = make_pool(min_size=2, max_size=3, name="otel-app")
    instrument(pool, meter_provider=provider)
    held = pool.getconn()
    m = _collect(reader)
    for name, unit in CONVENTIONS.items():
        if name.endswith("_time") and name != "db.client.connection.create_time":
            continue  # the histograms show once something was recorded (below)
        if name == "db.client.connection.create_time":
            continue  # the connections were made before instrument()
        assert name in m, name
        assert m[name].unit == unit, (name, m[name].unit)
        assert all(p.attributes[POOL] == "otel-app" for p in m[name].data.data_points), name
    assert _value(m, "db.client.connection.count", **{POOL: "otel-app", STATE: "used"}) == 1
    assert _value(m, "db.client.connection.count", **{POOL: "otel-app", STATE: "idle"}) == 1
    assert {p.attributes[STATE] for p in m["db.client.connection.count"].data.data_points} == {"idle", "used"}
    assert _value(m, "db.client.connection.max", **{POOL: "otel-app"}) == 3
    assert _value(m, "db.client.connection.idle.max", **{POOL: "otel-app"}) == 3
    assert _value(m, "db.client.connection.idle.min", **{POOL: "otel-app"}) == 2
    assert _value(m, "db.client.connection.pending_requests", **{POOL: "otel-app"}) == 0
    pool.putconn(held)
    m = _collect(reader)
    for name in ("db.client.connection.wait_time", "db.client.connection.use_time"):
        assert m[name].unit == "s"
        (point,) = _points(m[name], **{POOL: "otel-app"})
        assert point.count == 1


def test_idle_and_used_follow_borrows_and_returns(make_pool, otel):
    provider, reader = otel
    pool = make_pool(min_size=3, max_size=3, name="otel-follow")
    instrument(pool, meter_provider=provider)

    def counts() -> tuple[float, float]:
        m = _collect(reader)
        return (_value(m, "db.client.connection.count", **{POOL: "otel-follow", STATE: "idle"}),
                _value(m, "db.client.connection.count", **{POOL: "otel-follow", STATE: "used"}))  # fmt: skip

    assert counts() == (3, 0)
    a, b = pool.getconn(), pool.getconn()
    assert counts() == (1, 2)
    pool.putconn(a)
    assert counts() == (2, 1)
    pool.putconn(b)
    assert counts() == (3, 0)


def test_a_timeout_is_counted_and_waits_and_uses_land_in_the_histograms(make_pool, otel):
    provider, reader = otel
    pool = make_pool(min_size=1, max_size=1, name="otel-times", open=False, wait=False)
    instrument(pool, meter_provider=provider)
    pool.open(wait=True)
    held = pool.getconn()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.1)
    m = _collect(reader)
    assert _value(m, "db.client.connection.timeouts", **{POOL: "otel-times"}) == 1
    pool.putconn(held)
    for _ in range(3):
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.01)")
    m = _collect(reader)
    (wait,) = _points(m["db.client.connection.wait_time"], **{POOL: "otel-times"})
    (use,) = _points(m["db.client.connection.use_time"], **{POOL: "otel-times"})
    (create,) = _points(m["db.client.connection.create_time"], **{POOL: "otel-times"})
    assert wait.count == 4 and use.count == 4  # the held borrow and three more
    assert use.sum >= 3 * 0.01  # the three sleeps, in seconds
    assert create.count == 1 and create.sum > 0
    assert _value(m, "db.client.connection.timeouts", **{POOL: "otel-times"}) == 1


def test_tenants_and_routes_have_their_attribute(otel):
    from threadpool_db.routing import RoutingPool

    provider, reader = otel
    pool = ConnectionPool(connect=Factory(), min_size=1, max_size=2, check="never", tenant_limits={"acme": 1},
                          name="otel-tenants")  # fmt: skip
    routing = RoutingPool(ConnectionPool(connect=Factory(), min_size=1, max_size=1, check="never", name="otel-primary"),
                          name="otel-routing")  # fmt: skip
    try:
        pool.wait(10)
        routing.primary.wait(10)
        instrument(pool, meter_provider=provider)
        instrument(routing, meter_provider=provider)
        held = pool.getconn(tenant="acme")
        other = pool.getconn(tenant="globex")
        m = _collect(reader)
        assert _value(m, "threadpool_db.tenant.connection.count",
                      **{POOL: "otel-tenants", "threadpool_db.tenant": "acme"}) == 1  # fmt: skip
        assert (
            _value(
                m, "threadpool_db.tenant.connection.count", **{POOL: "otel-tenants", "threadpool_db.tenant": "other"}
            )
            == 1
        )  # bounded: not "globex"
        (waited,) = _points(m["threadpool_db.tenant.wait_time"], **{"threadpool_db.tenant": "acme"})
        assert waited.count == 1
        pool.putconn(held)
        pool.putconn(other)
        with routing.connection():
            pass
        m = _collect(reader)
        routes = m["threadpool_db.routing.wait_time"]
        (routed,) = _points(routes, **{POOL: "otel-routing", "threadpool_db.route": "primary"})
        assert routed.count == 1
        assert _value(m, "db.client.connection.max", **{POOL: "otel-primary"}) == 1  # its pools, instrumented
    finally:
        pool.close()
        routing.close()
        routing.primary.close()


def test_leaks_are_counted_beyond_the_conventions(make_pool, otel):
    from .helpers import wait_until

    provider, reader = otel
    pool = make_pool(min_size=1, max_size=1, name="otel-leaks", leak_threshold=0.2)
    instrument(pool, meter_provider=provider)
    held = pool.getconn()
    wait_until(lambda: pool.stats()["leaks_detected"] == 1, what="a leak report")
    pool.putconn(held)
    m = _collect(reader)
    assert _value(m, "threadpool_db.leaks.detected", **{POOL: "otel-leaks"}) == 1
    assert _value(m, "threadpool_db.leaks.returned_late", **{POOL: "otel-leaks"}) == 1
    assert _value(m, "threadpool_db.config_errors", **{POOL: "otel-leaks"}) == 0


def test_with_the_apis_no_op_provider_the_borrow_path_is_untouched(make_pool):
    pool = make_pool(min_size=1, max_size=1, name="otel-noop")
    before = pool._on_acquire, pool._on_release
    instrument(pool, meter_provider=NoOpMeterProvider())
    with pool.connection():
        pass
    assert (pool._on_acquire, pool._on_release) == before  # no observer: the same recorders as before


def test_instrument_refuses_what_is_not_a_pool():
    with pytest.raises(TypeError, match="ConnectionPool or a RoutingPool"):
        instrument(object())


def test_a_sqlalchemy_fair_queue_pool_is_instrumented_too(pg, otel):
    import sqlalchemy as sa

    from threadpool_db.sqlalchemy import FairQueuePool

    provider, reader = otel
    eng = sa.create_engine(pg.url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=FairQueuePool,
                           pool_size=2, max_overflow=0, name="otel-sa")  # fmt: skip
    try:
        instrument(eng.pool, meter_provider=provider)
        with eng.connect() as c:
            c.execute(sa.text("SELECT 1"))
            m = _collect(reader)
            assert _value(m, "db.client.connection.count", **{POOL: "otel-sa", STATE: "used"}) == 1
        m = _collect(reader)
        (waited,) = _points(m["db.client.connection.wait_time"], **{POOL: "otel-sa"})
        assert waited.count == 1
    finally:
        eng.dispose()


def _bucket(point: Any, at_least: float = 0.0) -> list[tuple[float, float]]:
    """The (lower, upper] bounds of each bucket of ``point`` that counted something."""
    edges = [float("-inf"), *point.explicit_bounds, float("inf")]
    return [(edges[i], edges[i + 1]) for i, n in enumerate(point.bucket_counts) if n]


def test_the_time_histograms_have_buckets_at_the_scale_of_connection_times(make_pool, otel):
    """Advised per instrument: the SDK's default boundaries (0, 5, 10, 25 ... 10000) would put
    a borrow from an idle pool, a 50 ms hold and a connect in the same bucket."""
    provider, reader = otel
    pool = make_pool(min_size=1, max_size=1, name="otel-buckets", open=False, wait=False)
    instrument(pool, meter_provider=provider)
    pool.open(wait=True)  # the connect is recorded
    with pool.connection():  # from the idle pool: microseconds of wait, a short use
        pass
    with pool.connection() as conn:
        conn.execute("SELECT pg_sleep(0.05)")  # a use of 50 ms or a little more
    m = _collect(reader)
    (wait,) = _points(m["db.client.connection.wait_time"], **{POOL: "otel-buckets"})
    (use,) = _points(m["db.client.connection.use_time"], **{POOL: "otel-buckets"})
    (create,) = _points(m["db.client.connection.create_time"], **{POOL: "otel-buckets"})
    for point in (wait, use, create):
        bounds = list(point.explicit_bounds)
        assert bounds == sorted(set(bounds)) and bounds[-1] >= 30.0  # up to a borrow timeout
    assert wait.explicit_bounds[0] <= 0.00001  # an idle pool's borrow is microseconds
    assert use.explicit_bounds[0] <= 0.0001
    assert create.explicit_bounds[0] <= 0.001
    # the two waits: both under 10 ms (an idle pool), each in a bucket that says so
    assert all(upper <= 0.01 for _lower, upper in _bucket(wait)), _bucket(wait)
    # the two uses fall in different buckets, the slept one in a bucket starting at 25 ms or more
    uses = _bucket(use)
    assert len(uses) == 2 and uses[1][0] >= 0.025 and uses[0][1] <= uses[1][0], uses
    # a connect on localhost: in a bucket that ends within a few seconds, not at 5 s from 0
    ((lower, upper),) = _bucket(create)
    assert upper <= 2.5 and lower > 0, (lower, upper)
    assert "db.client.connection.create_time" in m


def test_the_docs_console_example_prints_each_metric_once(pg, tmp_path):
    """docs/metrics.md's OpenTelemetry example: its reader exports once, not once on the
    flush and again on the shutdown."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    (code,) = [b for b in re.findall(r"^```python\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
               if "ConsoleMetricExporter" in b]  # fmt: skip
    script = tmp_path / "console_example.py"
    script.write_text(code)
    env = {**os.environ, "DATABASE_URL": pg.url}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('"name": "db.client.connection.max"') == 1, proc.stdout[-3000:]
    assert proc.stdout.count('"name": "db.client.connection.use_time"') == 1
