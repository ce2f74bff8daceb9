"""The connector: makes connections for a pool and decides when to try again.

It owns the driver, the ``configure`` callback, the checks run at borrow time, the secrets to
keep out of messages, and the reconnect backoff. The backoff is one per pool, shared by every
creator thread (more threads must not mean more connects per second against a failing server)
and pushed by failed connects and by brand-new connections that fail their check. It also
keeps the *configuration error*: set while the last attempt failed for a reason retrying
cannot fix (see ``drivers.permanent_cause``), cleared by the next success. Its state is
guarded by its own lock; the pool reads ``config_error`` (one reference, read atomically).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import LIFETIME_JITTER, Slot
from .drivers import IDLE, Driver, permanent_cause
from .errors import PoolError
from .redact import find_secrets, scrub

logger = logging.getLogger("threadpool_db")

BACKOFF_START = 0.1  # first retry after a failed connect (seconds, ±25% jitter)
BACKOFF_MAX = 1.0  # ceiling of the exponential backoff: recovery within ~1 s of the server
BACKOFF_MAX_CONFIG = 10.0  # ceiling while the server refuses our configuration (bad password …)
CAUSES_KEPT = 100  # distinct connect errors remembered for "logged once per cause"


@dataclass(frozen=True)
class Failure:
    """What one failed connect means: its password-free message, the permanent cause (None
    when retrying may help), the delay before the next attempt, and whether this message is
    new (log it) or a repeat (do not)."""

    message: str
    cause: str | None
    delay: float
    first: bool


class Connector:
    def __init__(self, name: str, driver: Driver, target: str, secrets: set[str], *,
                 configure: Callable[[Any], Any] | None, check: Callable[[Any], Any] | None, check_timeout: float,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.name = name  # the pool's, for messages
        self.driver = driver
        self.target = target  # host:port/dbname, never the password
        self._secrets = secrets  # replaced, never mutated: readers see a whole set
        self._configure = configure
        self._check = check
        self.check_timeout = check_timeout
        self._clock = clock
        self._lock = threading.Lock()  # guards the backoff state below
        self._streak = 0  # failed connects in a row
        self._check_streak = 0  # brand-new connections failing their check in a row
        self._retry_at = 0.0  # no attempt starts before this time (the pool's clock)
        self._causes: set[str] = set()  # messages logged already since the last success
        # Set while the last connect failed for a reason retrying cannot fix; read by the pool
        # without this lock (a single reference each). config_error is the password-free text,
        # config_exc the driver's exception re-made from that text (chained as __cause__).
        self.config_error: str | None = None
        self.config_exc: BaseException | None = None
        # The last failed connect's exception, password-free likewise; cleared by a success.
        self.last_exc: BaseException | None = None

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held the parent's)."""
        self._lock = threading.Lock()

    # -- secrets ------------------------------------------------------------------------------
    def learn(self, conninfo: str, kwargs: dict[str, Any]) -> None:
        """A callable conninfo or kwargs may rotate passwords: learn each before anything can
        log it."""
        self._secrets = self._secrets | find_secrets(conninfo, kwargs)

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    # -- connecting ---------------------------------------------------------------------------
    def wait_turn(self, stop: threading.Event, until: float | None = None) -> bool:
        """Sleep until the backoff allows an attempt, or until ``until`` (the caller's last
        chance: its reconnect_timeout), whichever comes first; False when ``stop`` was set
        meanwhile."""
        at = self._retry_at  # one float read
        if until is not None and until < at:
            at = until
        pause = at - self._clock()
        return not (pause > 0 and stop.wait(pause))

    def open_slot(self, gen: int, max_lifetime: float) -> Slot:
        """Connect and configure one connection (no pool lock held). Raises what connect or
        configure raised."""
        driver = self.driver
        raw = driver.connect()
        try:
            if self._configure is not None:
                self._configure(raw)
                if driver.knows_status and driver.status(raw) != IDLE:
                    raise PoolError("configure callback left the connection in a transaction; "
                                    "commit or roll back inside it")  # fmt: skip
            settings = driver.settings(raw)
        except BaseException:
            self.close_quietly(raw)
            raise
        now = self._clock()
        jitter = 1.0 - LIFETIME_JITTER * random.random()  # each lives up to 5% less
        return Slot(raw, driver.backend_pid(raw), now, now + max_lifetime * jitter, settings, gen)

    def failed(self, exc: BaseException) -> Failure:
        """Record a failed connect and push the backoff."""
        cause = permanent_cause(exc)
        msg = self.scrub(f"{type(exc).__name__}: {exc}".strip())
        clean = _scrubbed_copy(exc, self.scrub(str(exc)))
        with self._lock:
            self._streak += 1
            delay = self._push_locked(self._streak, BACKOFF_MAX_CONFIG if cause else BACKOFF_MAX)
            self.config_error = f"{cause}: {msg}" if cause else None
            self.config_exc = clean if cause else None
            self.last_exc = clean
            key = msg if len(self._causes) < CAUSES_KEPT else ""
            first = key not in self._causes
            self._causes.add(key)
        return Failure(msg, cause, delay, first)

    @property
    def streak(self) -> int:
        """Failed connects in a row, for messages (one int read)."""
        return self._streak

    def succeeded(self) -> int:
        """Record a successful connect; returns how many failed in a row before it (0 when
        there was nothing to recover from)."""
        with self._lock:
            recovered = self._streak if self._causes else 0
            self._streak = 0
            self._retry_at = 0.0
            self._causes.clear()
            self.config_error = None
            self.config_exc = self.last_exc = None
        return recovered

    def _push_locked(self, streak: int, cap: float) -> float:
        delay = min(BACKOFF_START * 2.0 ** (streak - 1), cap) * (0.75 + 0.5 * random.random())
        self._retry_at = max(self._retry_at, self._clock() + delay)
        return delay

    # -- checking -----------------------------------------------------------------------------
    def validate(self, slot: Slot) -> BaseException | None:
        """Check a connection at borrow time: None if fit, else why not. A connection that
        fails its check before it was ever used says more about the check (or the server)
        than about the connection: such failures in a row push the backoff like failed
        connects, so a check that always fails cannot open connections as fast as the server
        accepts them."""
        fresh = slot.last_used == slot.created
        try:
            if self._check is not None:
                self._run_check(slot)
            else:
                self.driver.validate(slot.raw, self.check_timeout)
        except Exception as e:
            if fresh:
                with self._lock:
                    self._check_streak += 1
                    self._push_locked(self._check_streak, BACKOFF_MAX)
            return e
        if fresh and self._check_streak:
            with self._lock:
                self._check_streak = 0
        return None

    def _run_check(self, slot: Slot) -> None:
        """Run the user's check in a daemon helper thread, so a check that hangs is bounded by
        check_timeout (and cannot hold up interpreter exit). On timeout the connection is
        aborted (cancel, socket shut down: safe while the helper is inside libpq) and the
        helper closes it when it is done with it: never ``close`` under another thread."""
        result: list[BaseException | None] = []
        handoff = threading.Lock()  # decides, once, who closes the connection after a timeout
        state = {"done": False, "abandoned": False}

        def run() -> None:
            try:
                self._check(slot.raw)  # type: ignore[misc]
                result.append(None)
            except BaseException as e:
                result.append(e)
            finally:
                with handoff:
                    state["done"] = True
                    mine = state["abandoned"]
                if mine:  # the pool gave up on it while we were inside the driver
                    self.close_quietly(slot.raw)

        t = threading.Thread(target=run, name=f"{self.name}-check", daemon=True)
        t.start()
        t.join(self.check_timeout)
        with handoff:
            late = not state["done"]
            state["abandoned"] = late
        if late:
            self.driver.abort(slot.raw)  # cancel and cut the socket: safe beside the helper
            raise CheckTimedOut(f"check callback did not finish within check_timeout={self.check_timeout:g} s")
        if result[0] is not None:
            raise result[0]

    # -- closing ------------------------------------------------------------------------------
    def close_quietly(self, raw: Any) -> None:
        try:
            self.driver.close(raw)
        except Exception as e:
            logger.debug("pool %r: error closing a connection: %s", self.name, self.scrub(str(e)))


def _scrubbed_copy(exc: BaseException, text: str) -> BaseException:
    """The driver's exception, of its own class, re-made from its password-free text: what a
    PoolConfigError or PoolTimeout chains as ``__cause__``. The original is not chained: its
    message, arguments and own chain may echo the password."""
    try:
        copy = type(exc)(text)
    except Exception:  # a class that will not take one message
        copy = PoolError(f"{type(exc).__name__}: {text}")
    return copy


class CheckTimedOut(PoolError):
    """A check callback ran past check_timeout. Its thread may still be inside the driver on
    the connection: the connection was aborted, and that thread closes it when it returns;
    nobody else may."""
