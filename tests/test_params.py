"""The configuration (threadpool_db/config.py): invalid parameters raise ValueError naming the
parameter, before anything connects; the configuration is frozen data, grouped, validated once."""

from __future__ import annotations

import dataclasses

import pytest

from threadpool_db import ConnectionPool
from threadpool_db.config import PoolConfig

DSN = "postgresql://app:pw@127.0.0.1:1/app"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_size": -1}, "min_size"),
        ({"min_size": 1.5}, "min_size"),
        ({"min_size": "4"}, "min_size"),
        ({"min_size": 4, "max_size": 2}, "max_size"),
        ({"max_size": 0}, "max_size"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"max_waiting": -1}, "max_waiting"),
        ({"max_lifetime": 0}, "max_lifetime"),
        ({"max_idle": -5}, "max_idle"),
        ({"check": "sometimes"}, "check"),
        ({"check_timeout": 0}, "check_timeout"),
        ({"reconnect_timeout": -1}, "reconnect_timeout"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"num_workers": 0}, "num_workers"),
        ({"configure": "SET x"}, "configure"),
        ({"reset": 3}, "reset"),
        ({"kwargs": [("a", 1)]}, "kwargs"),
        ({"name": 7}, "name"),
        ({"leak_threshold": 0}, "leak_threshold"),
        ({"leak_threshold": -1}, "leak_threshold"),
        ({"capture_stacks": "all"}, "capture_stacks"),
        ({"stack_sample_rate": 2}, "stack_sample_rate"),
        ({"reclaim_leaked": True, "leak_threshold": None}, "leak_threshold"),
        ({"leak_threshold": 1, "reclaim_factor": 0.5}, "reclaim_factor"),
    ],
)
def test_bad_parameter_names_itself(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ConnectionPool(DSN, open=False, **kwargs)


def test_empty_conninfo_means_libpq_environment_and_both_are_refused():
    pool = ConnectionPool(open=False)  # as psycopg: "" means PG* variables and libpq defaults
    assert pool.conninfo == ""
    with pytest.raises(ValueError, match="not both"):
        ConnectionPool(DSN, connect=lambda: None, open=False)
    with pytest.raises(ValueError, match="conninfo"):
        ConnectionPool(42, open=False)  # type: ignore[arg-type]


def test_bad_getconn_timeout_is_refused():
    pool = ConnectionPool(DSN, open=False)
    with pytest.raises(ValueError, match="timeout"):
        pool.getconn(timeout=-1)


def test_max_size_defaults_to_min_size():
    pool = ConnectionPool(DSN, min_size=3, open=False)
    assert pool.max_size == 3


def test_configuration_is_data_frozen_grouped_and_validated_once(dsn):
    cfg = PoolConfig.build(dsn, min_size=1, max_size=3, tenant_limits={"a": 1}, burst_size=5)
    assert (cfg.sizing.min_size, cfg.sizing.max_size, cfg.burst.size) == (1, 3, 5)
    assert cfg.tenants.limits == {"a": 1} and cfg.leaks.threshold == 60.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sizing.max_size = 9  # type: ignore[misc]
    with pytest.raises(ValueError, match="burst_size"):
        PoolConfig.build(dsn, max_size=4, burst_size=2)
    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=False)
    assert pool.config.sizing == PoolConfig.build(dsn, min_size=1, max_size=2).sizing
    with pytest.raises(ValueError, match="max_size"):  # resize reuses the same size rule
        pool.resize(3, 2)
