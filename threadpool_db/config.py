"""A pool's configuration as data: frozen, validated once, grouped as the README groups the
options. ``ConnectionPool(**kwargs)`` stays the public face and builds one; ``FlaskPool``
validates its options with it at start-up; ``resize()`` reuses its size rule (``check_sizes``).

Every rule is here, and every error names the parameter it is about.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .redact import redact_conninfo

CHECKS = ("auto", "always", "never")
AUTO_CHECK_IDLE = 0.5  # seconds idle after which check="auto" validates on borrow
CAPTURES = ("off", "sampled", "full")
# network_timeout's default. A blip (a lost packet, a router's failover: a few retransmits,
# the first five within ~6 s) must not kill healthy connections, but a silent partition must
# free a gunicorn thread well before its worker timeout (30 s) and before the borrow timeout
# (30 s) runs out for the requests queued behind it: 10 s, the same as connect_timeout.
NETWORK_TIMEOUT = 10.0


# -- the size rule and the checks every module shares -------------------------------------------
def positive(name: str, value: Any, *, allow_zero: bool = True, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def int_at_least(name: str, value: Any, low: int, also: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}{also}, got {value!r}")


UNLIMITED = 1 << 30  # a null pool's "max_size=0": no limit of ours


def check_sizes(min_size: Any, max_size: Any, *, null: bool = False) -> tuple[int, int]:
    """Validate a (min_size, max_size) pair as psycopg_pool does: max_size None means min_size,
    so ``min_size=0`` needs a max_size. A null pool has min_size 0, and max_size 0 (or None)
    means no limit (returned as UNLIMITED)."""
    int_at_least("min_size", min_size, 0)
    if null:
        if min_size != 0:
            raise ValueError(f"a null pool keeps no idle connections: min_size must be 0, got {min_size!r}")
        if max_size is None or max_size == 0:
            return 0, UNLIMITED
    if max_size is None:
        if min_size == 0:
            raise ValueError("max_size must be given when min_size is 0 (max_size None means min_size, and a pool "
                             "of 0 connections could never lend one)")  # fmt: skip
        max_size = min_size
    int_at_least("max_size", max_size, 1)
    if max_size < min_size:
        raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size})")
    return min_size, max_size


def describe_target(conninfo: Any, kwargs: dict[str, Any] | None) -> str:
    """host:port/dbname for messages, never the password: what libpq will try, the PG*
    environment variables and libpq's own defaults filled in (an empty conninfo with PGHOST
    set names PGHOST's host, not "localhost"); no host at all is libpq's Unix socket."""
    if callable(conninfo) or conninfo is None:
        return "(callable conninfo)" if callable(conninfo) else "(connect factory)"
    try:
        from psycopg import pq
        from psycopg.conninfo import conninfo_to_dict

        d = {k: v for k, v in conninfo_to_dict(conninfo, **(kwargs or {})).items() if v not in (None, "")}
        # libpq's defaults: each keyword's PG* variable, else its built-in default, read now
        # (as libpq reads them at each connect; the environment rarely changes in between).
        defaults = {o.keyword.decode(): o.val.decode() for o in pq.Conninfo.get_defaults() if o.val is not None}
        host = d.get("host") or d.get("hostaddr") or defaults.get("host") or defaults.get("hostaddr")
        port = d.get("port") or defaults.get("port") or "5432"
        dbname = d.get("dbname") or defaults.get("dbname") or d.get("user") or defaults.get("user") or ""
        where = f"{host}:{port}" if host and not host.startswith("/") else f"unix socket {host or '(default)'}:{port}"
        # A field may itself hold a DSN pasted in the wrong place (host="postgresql://u:pw@h"):
        # the description goes through redaction too.
        return redact_conninfo(f"{where}/{dbname}")
    except Exception:
        return redact_conninfo(str(conninfo))


@dataclass(frozen=True)
class Connection:
    conninfo: str | Callable[[], str] = ""  # "" means libpq's defaults and PG* variables
    connect: Callable[[], Any] | None = None
    kwargs: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
    connection_class: type | None = None
    configure: Callable[[Any], Any] | None = None
    reset: Callable[[Any], Any] | None = None
    reconnect_failed: Callable[[Any], Any] | None = None
    pgbouncer: bool | None = None
    name: str | None = None


@dataclass(frozen=True)
class Sizing:
    min_size: int = 4
    max_size: int = 4
    timeout: float = 30.0
    max_waiting: int = 0
    num_workers: int = 3  # psycopg_pool's (docs/api.md: why)


@dataclass(frozen=True)
class Lifecycle:
    max_lifetime: float = 3600.0  # psycopg_pool's (docs/api.md: why)
    max_idle: float = 600.0
    reconnect_timeout: float = 300.0
    connect_timeout: float | None = 10.0
    # Seconds without hearing from the server before a connection counts as dead (libpq's
    # keepalives and tcp_user_timeout, see drivers.network_settings); None: the OS defaults.
    network_timeout: float | None = NETWORK_TIMEOUT


@dataclass(frozen=True)
class Checks:
    check: str | Callable[[Any], Any] = "auto"  # "auto", "always", "never", or a callable
    check_timeout: float = 5.0


@dataclass(frozen=True)
class Leaks:
    threshold: float | None = 60.0  # None: leak detection off
    capture_stacks: str = "sampled"
    stack_sample_rate: float = 0.05
    reclaim: bool = False
    reclaim_factor: float = 2.0


@dataclass(frozen=True)
class Tenants:
    limits: dict[str, int] = field(default_factory=dict)
    default_limit: int | None = None
    wait: bool = True
    priority_aging: float = 1.0


@dataclass(frozen=True)
class Burst:
    size: int | None = None
    wait_threshold: float = 0.1
    lifetime: float = 60.0


@dataclass(frozen=True)
class PoolConfig:
    connection: Connection
    sizing: Sizing
    lifecycle: Lifecycle
    checks: Checks
    leaks: Leaks
    tenants: Tenants
    burst: Burst
    PARAMETERS: ClassVar[tuple[str, ...]]  # build()'s, set below: what a pool's constructor passes on

    @classmethod
    def build(
        cls,
        conninfo: Any = "",
        *,
        connect: Any = None,
        kwargs: Any = None,
        connection_class: Any = None,
        min_size: Any = 4,
        max_size: Any = None,
        timeout: Any = 30.0,
        max_waiting: Any = 0,
        max_lifetime: Any = 3600.0,
        max_idle: Any = 600.0,
        check: Any = "auto",
        check_timeout: Any = 5.0,
        configure: Any = None,
        reset: Any = None,
        reconnect_timeout: Any = 300.0,
        reconnect_failed: Any = None,
        connect_timeout: Any = 10.0,
        network_timeout: Any = NETWORK_TIMEOUT,
        num_workers: Any = 3,
        name: Any = None,
        leak_threshold: Any = 60.0,
        capture_stacks: Any = "sampled",
        stack_sample_rate: Any = 0.05,
        reclaim_leaked: Any = False,
        reclaim_factor: Any = 2.0,
        tenant_limits: Any = None,
        default_tenant_limit: Any = None,
        tenant_wait: Any = True,
        priority_aging: Any = 1.0,
        burst_size: Any = None,
        burst_wait_threshold: Any = 0.1,
        burst_lifetime: Any = 60.0,
        pgbouncer: Any = None,
        null: bool = False,
    ) -> PoolConfig:
        """Validate every parameter (ValueError naming it) and return the configuration.
        ``null``: the rules of a NullConnectionPool (min_size 0; max_size 0 means no limit)."""
        # -- connection ------------------------------------------------------------------------
        if conninfo is None:
            conninfo = ""
        if not (isinstance(conninfo, str) or callable(conninfo)):
            raise ValueError(f"conninfo must be a str or a callable, got {type(conninfo).__name__}")
        if connect is not None and not callable(connect):
            raise ValueError("connect must be a zero-argument callable")
        if connect is not None and (callable(conninfo) or conninfo):
            raise ValueError("give conninfo or connect, not both")
        if kwargs is not None and not (isinstance(kwargs, dict) or callable(kwargs)):
            raise ValueError(f"kwargs must be a dict or a callable returning one, got {type(kwargs).__name__}")
        if connection_class is not None:
            import typing

            import psycopg

            # a generic alias (MyConnection[DictRow]) stands for its class: psycopg's own typing
            origin = typing.get_origin(connection_class) or connection_class
            if not (isinstance(origin, type) and issubclass(origin, psycopg.Connection)):
                raise ValueError(f"connection_class must be a psycopg.Connection subclass (or a generic alias of "
                                 f"one, such as MyConnection[DictRow]), got {connection_class!r}")  # fmt: skip
            if connect is not None:
                raise ValueError("connection_class applies to conninfo, not to a connect factory")
        for cb_name, cb in (("configure", configure), ("reset", reset), ("reconnect_failed", reconnect_failed)):
            if cb is not None and not callable(cb):
                raise ValueError(f"{cb_name} must be a callable, got {type(cb).__name__}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name must be a str, got {type(name).__name__}")
        # -- sizing ----------------------------------------------------------------------------
        min_size, max_size = check_sizes(min_size, max_size, null=null)
        positive("timeout", timeout)
        int_at_least("max_waiting", max_waiting, 0)
        int_at_least("num_workers", num_workers, 1)
        # -- lifecycle -------------------------------------------------------------------------
        positive("max_lifetime", max_lifetime, allow_zero=False)
        positive("max_idle", max_idle, allow_zero=False)
        positive("reconnect_timeout", reconnect_timeout)
        positive("connect_timeout", connect_timeout, allow_zero=False, allow_none=True)
        positive("network_timeout", network_timeout, allow_zero=False, allow_none=True)
        # -- checks ----------------------------------------------------------------------------
        if check is None:  # psycopg_pool's "no check"
            check = "never"
        if not callable(check) and check not in CHECKS:
            raise ValueError(f"check must be one of {', '.join(CHECKS)} or a callable, got {check!r}")
        positive("check_timeout", check_timeout, allow_zero=False)
        # -- leaks -----------------------------------------------------------------------------
        if capture_stacks not in CAPTURES:
            raise ValueError(f"capture_stacks must be one of {', '.join(CAPTURES)}, got {capture_stacks!r}")
        if isinstance(stack_sample_rate, bool) or not isinstance(stack_sample_rate, (int, float)) \
                or not 0.0 <= stack_sample_rate <= 1.0:  # fmt: skip
            raise ValueError(f"stack_sample_rate must be between 0 and 1, got {stack_sample_rate!r}")
        if isinstance(reclaim_factor, bool) or not isinstance(reclaim_factor, (int, float)) or reclaim_factor < 1.0:
            raise ValueError(f"reclaim_factor must be a number >= 1, got {reclaim_factor!r}")
        if leak_threshold is None:
            if reclaim_leaked:
                raise ValueError("reclaim_leaked=True needs a leak_threshold")
        elif isinstance(leak_threshold, bool) or not isinstance(leak_threshold, (int, float)) or not leak_threshold > 0:
            raise ValueError(f"leak_threshold must be a number > 0 or None, got {leak_threshold!r}")
        # -- tenants ---------------------------------------------------------------------------
        for tenant, n in (tenant_limits or {}).items():
            if not isinstance(tenant, str) or isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"tenant_limits must map tenant names to ints >= 1, got {tenant!r}: {n!r}")
        if default_tenant_limit is not None:
            int_at_least("default_tenant_limit", default_tenant_limit, 1, " or None")
        positive("priority_aging", priority_aging, allow_zero=False)
        # -- burst -----------------------------------------------------------------------------
        if burst_size is not None and (isinstance(burst_size, bool) or not isinstance(burst_size, int)
                                       or burst_size < max_size):  # fmt: skip
            raise ValueError(f"burst_size must be an int >= max_size ({max_size}) or None, got {burst_size!r}")
        positive("burst_wait_threshold", burst_wait_threshold, allow_zero=False)
        positive("burst_lifetime", burst_lifetime, allow_zero=False)
        return cls(
            Connection(
                conninfo, connect, kwargs, connection_class, configure, reset, reconnect_failed, pgbouncer, name
            ),
            Sizing(min_size, max_size, float(timeout), max_waiting, num_workers),
            Lifecycle(
                float(max_lifetime),
                float(max_idle),
                float(reconnect_timeout),
                None if connect_timeout is None else float(connect_timeout),
                None if network_timeout is None else float(network_timeout),
            ),
            Checks(check, float(check_timeout)),
            Leaks(
                None if leak_threshold is None else float(leak_threshold),
                capture_stacks,
                float(stack_sample_rate),
                bool(reclaim_leaked),
                float(reclaim_factor),
            ),
            Tenants(dict(tenant_limits or {}), default_tenant_limit, bool(tenant_wait), float(priority_aging)),
            Burst(burst_size, float(burst_wait_threshold), float(burst_lifetime)),
        )


# Every parameter build() takes from a pool's constructor (null is the pool's kind, not a parameter).
PoolConfig.PARAMETERS = tuple(p for p in inspect.signature(PoolConfig.build).parameters if p != "null")
