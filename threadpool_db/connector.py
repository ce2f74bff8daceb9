"""The connector: makes, checks, resets and closes one connection for a pool, says whether it
is fit for reuse, and decides when to try connecting again.

It is the seam for *kinds* of connection: the pool holds Slots and asks the connector about
what is in them (a psycopg connection, a DB-API one through its driver adapter); it never talks
to a connection itself. It owns the driver, the ``configure`` and ``reset`` callbacks, the
checks run at borrow time, the reset on return, the secrets to keep out of messages, and the
reconnect backoff. The backoff is one per pool, shared by every
creator thread (more threads must not mean more connects per second against a failing server)
and pushed by failed connects and by brand-new connections that fail their check. It also
keeps the *configuration error*: set while the last attempt failed for a reason retrying
cannot fix (see ``drivers.permanent_cause``), cleared by the next success. Its state is
guarded by its own lock; the pool reads ``refusal`` (one reference, read atomically).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import commits, config
from .drivers import (
    ACTIVE,
    IDLE,
    INERROR,
    INTRANS,
    STATUS_NAMES,
    Driver,
    Settings,
    ValidationTimeout,
    is_fatal_sqlstate,
    make_driver,
    permanent_cause,
)
from .errors import PoolError
from .pgbouncer import guard_configure, take_flag
from .records import ADAPTERS, BROKEN, DIRTY, Slot
from .redact import find_secrets, scrub

logger = logging.getLogger("threadpool_db")

BACKOFF_START = 0.1  # first retry after a failed connect (seconds, ±25% jitter)
BACKOFF_MAX = 1.0  # ceiling of the exponential backoff: recovery within ~1 s of the server
BACKOFF_MAX_CONFIG = 10.0  # ceiling while the server refuses our configuration (bad password …)
CAUSES_KEPT = 100  # distinct connect errors remembered for "logged once per cause"
LIFETIME_JITTER = 0.05  # each connection lives up to 5% less than max_lifetime
BAD_RETURN_LOG_INTERVAL = 10.0  # seconds between two warnings about a returned open transaction
DISCARDED = -1  # the key of "discarded at return" among the bad-return warnings (the others: a status)
OUTAGE_LOG_INTERVAL = 10.0  # seconds between two warnings about the same failed-connect cause
MIN_CHECK = 0.05  # a check always gets this long, however little time its borrower has left


@dataclass(frozen=True)
class Failure:
    """What one failed connect means: its password-free message, the permanent cause (None
    when retrying may help), the delay before the next attempt, and whether this message is
    new (log it) or a repeat (do not)."""

    message: str
    cause: str | None
    delay: float
    first: bool


RETRY, STOP, GIVE_UP = "retry", "stop", "give up"  # what a pool says of a failed connect


class Growing(Protocol):
    """What making a connection asks of the pool that wants it (ConnectionPool is one)."""

    def _attempting(self, at: float) -> None:
        """An attempt starts (the pool keeps the recent ones: ``connect_attempts()``)."""
        ...

    def _attempt_failed(self, failure: Failure, gen: int, took: float, give_up_at: float) -> str:
        """Count a failed attempt; RETRY while a connection is still needed and time is left,
        STOP when it is not needed (or the pool moved on), GIVE_UP when the time ran out."""
        ...

    def _add_connection(self, slot: Slot, gen: int, took: float) -> None:
        """Take a new connection in (or close it: a pool that no longer wants it)."""
        ...

    def _stopped_growing(self, gen: int) -> None:
        """The pool is stopping: the connection asked for will not be made."""
        ...


def _with_kwargs(kwargs: Any, **extra: Any) -> Any:
    """``kwargs`` (a dict, a callable returning one, or None) with ``extra`` added."""
    if callable(kwargs):
        inner = kwargs
        return lambda: {**inner(), **extra}
    return {**(kwargs or {}), **extra}


class Connector:
    def __init__(self, name: str, driver: Driver, target: str, secrets: set[str], *,
                 configure: Callable[[Any], Any] | None, check: Callable[[Any], Any] | None, check_timeout: float,
                 clock: Callable[[], float], reset: Callable[[Any], Any] | None = None) -> None:  # fmt: skip
        self.name = name  # the pool's, for messages
        self.driver = driver
        # The one read on every return: the connection's transaction state (IDLE: nothing to
        # reset). The driver's own bound method, so asking through the connector costs nothing.
        self.status = driver.status
        self.reset_callback = reset  # the user's reset, run on each return after the built-in one
        self.target = target  # host:port/dbname, never the password
        self._secrets = secrets  # replaced, never mutated: readers see a whole set
        self._configure = configure
        self._check = check
        self.check_timeout = check_timeout
        self._clock = clock
        self._lock = threading.Lock()  # guards the backoff state and _bad_returns below
        self._streak = 0  # failed connects in a row
        self._check_streak = 0  # brand-new connections failing their check in a row
        self._retry_at = 0.0  # no attempt starts before this time (the pool's clock)
        self._causes: set[str] = set()  # messages logged already since the last success
        self._outage_lines: dict[str, list[float]] = {}  # cause -> [last logged at, not logged since]
        self._bad_returns: dict[int, list[float]] = {}  # status or DISCARDED -> [last logged at, suppressed]
        # Set while the last connect failed for a reason retrying cannot fix; read by the pool
        # without this lock, so one reference holds both halves (two fields read one after the
        # other could mix a failure's text with a later success's None): the password-free
        # text, and the driver's exception re-made from it (chained as __cause__).
        self.refusal: tuple[str, BaseException] | None = None
        # The last failed connect's exception, password-free likewise; cleared by a success.
        self.last_exc: BaseException | None = None

    @property
    def config_error(self) -> str | None:
        """The configuration error's text, or None (read ``refusal`` for text and exception)."""
        refusal = self.refusal  # one read
        return refusal[0] if refusal is not None else None

    # What for_pool worked out from the pool's parameters (the pool shows them as its own).
    conninfo: Any = ""  # the conninfo, without a ?pgbouncer flag
    kwargs: Any = None  # the connect kwargs (behind PgBouncer: with prepare_threshold=None)
    pgbouncer = False  # behind PgBouncer in transaction mode

    @classmethod
    def for_pool(cls, name: str, c: config.Connection, *, connect_timeout: float | None,
                 network_timeout: float | None = None,
                 check: Callable[[Any], Any] | None, check_timeout: float,
                 clock: Callable[[], float], driver: Driver | None = None) -> Connector:  # fmt: skip
        """The connector for a pool's connection parameters: the driver (psycopg for a
        conninfo, else the ``connect`` factory's), PgBouncer's rules when it is behind one (no
        prepared statements, no session SET in ``configure``), and the secrets to keep out of
        every message, a callable conninfo's or kwargs' learned as each is called. ``driver``:
        another kind of connection altogether, which the pool then holds without knowing it."""
        if driver is not None and (c.connect is not None or c.conninfo):
            raise ValueError("give a driver, or conninfo or connect, not both")
        if driver is not None and not isinstance(driver, Driver):
            raise ValueError(f"driver must be a threadpool_db.drivers.Driver, got {type(driver).__name__}")
        conninfo, kwargs, configure, flagged = c.conninfo, c.kwargs, c.configure, False
        if isinstance(conninfo, str):
            conninfo, flagged = take_flag(conninfo)
        pgbouncer = bool(c.pgbouncer) or (flagged and c.pgbouncer is None)
        if pgbouncer:
            kwargs = _with_kwargs(kwargs, prepare_threshold=None)
            configure = guard_configure(configure)
        static_kwargs = kwargs if isinstance(kwargs, dict) else None
        target = config.describe_target(conninfo, static_kwargs)
        secrets = find_secrets(conninfo if isinstance(conninfo, str) else None, static_kwargs)
        # A callable conninfo/kwargs may rotate secrets: learned before anything can log them
        # (through a holder, filled below: the driver is made before the connector).
        learner: list[Callable[[str, dict[str, Any]], None]] = []
        learn = (lambda ci, kw: learner[0](ci, kw)) if callable(conninfo) or callable(kwargs) else None
        if driver is None:
            driver = make_driver(conninfo, c.connect, kwargs, connect_timeout, c.connection_class, learn=learn,
                                 network_timeout=network_timeout)  # fmt: skip
        made = cls(name, driver, target, secrets, configure=configure, check=check, check_timeout=check_timeout,
                   clock=clock, reset=c.reset)  # fmt: skip
        learner.append(made.learn)
        made.conninfo, made.kwargs, made.pgbouncer = conninfo, kwargs, pgbouncer
        return made

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held the parent's)."""
        self._lock = threading.Lock()

    # -- secrets ------------------------------------------------------------------------------
    def learn(self, conninfo: str, kwargs: dict[str, Any]) -> None:
        """A callable conninfo or kwargs may rotate passwords: learn each before anything can
        log it. Creator threads may learn at once: under the lock, so no secret is lost."""
        found = find_secrets(conninfo, kwargs)
        with self._lock:
            self._secrets = self._secrets | found

    def scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    # -- connecting ---------------------------------------------------------------------------
    def make_for(self, pool: Growing, gen: int, stop: threading.Event, max_lifetime: float, give_up_at: float,
                 reconnect_failed: Callable[[Any], Any] | None) -> None:  # fmt: skip
        """Make one connection for ``pool`` (a creator thread), retrying at the backoff's pace
        while the pool still needs it. The last attempt comes at ``give_up_at`` exactly, so
        ``reconnect_failed(pool)`` comes on time."""
        start = self._clock()
        while self.wait_turn(stop, give_up_at):
            attempt = self._clock()
            pool._attempting(attempt)
            try:
                slot = self.open_slot(gen, max_lifetime)
            except Exception as e:
                f = self.failed(e)
                verdict = pool._attempt_failed(f, gen, self._clock() - attempt, give_up_at)
                self.log_failure(f, min(f.delay, max(0.0, give_up_at - self._clock())), verdict != RETRY)
                if verdict == RETRY:
                    continue
                if verdict == GIVE_UP:
                    # psycopg_pool's words ("reconnection attempt ... failed"): alerts written
                    # for its log keep matching
                    logger.error("pool %r: reconnection attempt to %s failed after %.1f s, giving up: %s",
                                 self.name, self.target, self._clock() - start, f.message)  # fmt: skip
                    if reconnect_failed is not None:
                        try:
                            reconnect_failed(pool)
                        except Exception:
                            logger.exception("pool %r: the reconnect_failed callback raised", self.name)
                return
            recovered = self.succeeded()
            pool._add_connection(slot, gen, self._clock() - attempt)  # connect and configure
            if recovered:
                logger.warning("pool %r: connected to %s again after %d failed attempt(s)",
                               self.name, self.target, recovered)  # fmt: skip
            return
        pool._stopped_growing(gen)

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
        # The driver may change its status function as it connects (a _SniffingDriver becomes
        # psycopg's on its first connection): read it again, or every return would reset.
        self.status = driver.status
        try:
            if self._configure is not None:
                self._configure(raw)
                if driver.knows_status and (st := driver.status(raw)) != IDLE:
                    raise PoolError(f"configure callback left the connection in a transaction ({STATUS_NAMES[st]}); "
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
        text = self.scrub(str(exc))
        msg = f"{type(exc).__name__}: {text}".strip()
        clean = _scrubbed_copy(exc, text)
        with self._lock:
            self._streak += 1
            delay = self._push_locked(self._streak, BACKOFF_MAX_CONFIG if cause else BACKOFF_MAX)
            self.refusal = (f"{cause}: {msg}", clean) if cause else None
            self.last_exc = clean
            key = msg if len(self._causes) < CAUSES_KEPT else ""
            first = key not in self._causes
            self._causes.add(key)
        return Failure(msg, cause, delay, first)

    def log_failure(self, f: Failure, next_in: float, give_up: bool) -> None:
        """Say why a connect failed: a permanent cause at ERROR once (it will not change until
        someone fixes it; repeats at DEBUG), any other at WARNING the first time, then at most
        once per OUTAGE_LOG_INTERVAL per cause with how many failed in between (the others at
        DEBUG), with the delay before the next one (the last one is the pool's ERROR)."""
        if f.cause and f.first:
            logger.error("pool %r: cannot connect to %s (%s: fix the configuration): %s (retrying with backoff; "
                         "logged once per cause)", self.name, self.target, f.cause, f.message)  # fmt: skip
        elif f.cause:
            logger.debug("pool %r: connection to %s failed again, next attempt in %.2f s: %s",
                         self.name, self.target, next_in, f.message)  # fmt: skip
        elif not give_up:
            suppressed = self._outage_line_due(f.message)
            if suppressed is None:  # said less than OUTAGE_LOG_INTERVAL ago: the count grows
                logger.debug("pool %r: cannot connect to %s (attempt %d; next in %.2f s): %s",
                             self.name, self.target, self._streak, next_in, f.message)  # fmt: skip
                return
            more = f"; {suppressed} more failed attempt(s) like it since the last warning" if suppressed else ""
            logger.warning("pool %r: cannot connect to %s (attempt %d; next in %.2f s): %s%s",
                           self.name, self.target, self._streak, next_in, f.message, more)  # fmt: skip

    def _outage_line_due(self, cause: str) -> int | None:
        """An outage logs its first failure, then at most one line per OUTAGE_LOG_INTERVAL per
        cause (an operator reads a line every 10 s, not 30 lines in 13 s): how many were not
        logged since the last line of this cause, or None when this one is not due."""
        now = self._clock()
        with self._lock:
            last = self._outage_lines.get(cause)
            if last is None:
                if len(self._outage_lines) >= CAUSES_KEPT:
                    return None
                self._outage_lines[cause] = [now, 0]
                return 0
            if now - last[0] < OUTAGE_LOG_INTERVAL:
                last[1] += 1
                return None
            suppressed, last[0], last[1] = last[1], now, 0
            return int(suppressed)

    def succeeded(self) -> int:
        """Record a successful connect; returns how many failed in a row before it (0 when
        there was nothing to recover from)."""
        with self._lock:
            recovered = self._streak if self._causes else 0
            self._streak = 0
            self._retry_at = 0.0
            self._causes.clear()
            self._outage_lines.clear()
            self.refusal = None
            self.last_exc = None
        return recovered

    def _push_locked(self, streak: int, cap: float) -> float:
        delay = min(BACKOFF_START * 2.0 ** (streak - 1), cap) * (0.75 + 0.5 * random.random())
        self._retry_at = max(self._retry_at, self._clock() + delay)
        return delay

    # -- checking -----------------------------------------------------------------------------
    def validate(self, slot: Slot, timeout: float | None = None, *, sweep: bool = False) -> BaseException | None:
        """Check a connection at borrow time: None if fit, else why not, within ``timeout``
        seconds (the borrower's time left; never more than check_timeout). A connection that
        fails its check before it was ever used says more about the check (or the server)
        than about the connection: such failures in a row push the backoff like failed
        connects, so a check that always fails cannot open connections as fast as the server
        accepts them. Not in a ``sweep`` (``pool.check()``): it tests every idle connection at
        once, so its failures tell the server's state, and the replacements' connects are what
        pace the retries (as psycopg_pool's ``check()`` refills at once)."""
        fresh = not sweep and slot.last_used == slot.created
        budget = self.check_timeout if timeout is None else max(MIN_CHECK, min(timeout, self.check_timeout))
        try:
            if self._check is not None:
                self._run_check(slot, budget)
            else:
                self.driver.validate(slot.raw, budget)
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

    def _run_check(self, slot: Slot, timeout: float) -> None:
        """Run the user's check in a daemon helper thread, so a check that hangs is bounded by
        ``timeout`` (and cannot hold up interpreter exit). On timeout the connection is
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
        t.join(timeout)
        with handoff:
            late = not state["done"]
            state["abandoned"] = late
        if late:
            # Cancel and cut the socket (safe beside the helper), in the background: the cancel
            # request opens a connection, which on a silent network would hold the borrower
            # past its deadline.
            threading.Thread(target=self.driver.abort, args=(slot.raw,), name=f"{self.name}-abort", daemon=True).start()
            limit = f"check_timeout={self.check_timeout:g} s"
            bound = limit if timeout >= self.check_timeout else f"the borrower's time left, {timeout:.2f} s ({limit})"
            raise CheckTimedOut(f"check callback did not finish within {bound}")
        if result[0] is not None:
            raise result[0]

    # -- returning ----------------------------------------------------------------------------
    def end_block(self, raw: Any, status: int, commit: bool, exc: BaseException | None, slot: Slot) -> None:
        """The end of a ``with`` block, given the connection's ``status`` (the caller's read):
        commit an open transaction when ``commit``, else roll it back (on purpose: no warning);
        a failed one is rolled back. A fatal error ``exc`` marks the connection broken. A
        connection that is closed or broken is left alone (as psycopg's own
        ``Connection.__exit__``): the return discards it."""
        try:
            if status == INTRANS:
                if commit:
                    commits.commit(raw)  # a COMMIT lost in flight says so (CommitOutcomeUnknown)
                else:
                    self.driver.rollback(raw)
            elif status == INERROR:
                self.driver.rollback(raw)
        finally:
            if exc is not None and is_fatal_sqlstate(exc):
                slot.return_flags |= BROKEN

    def reset(self, slot: Slot) -> str | None:
        """Make a returned connection fit for the next borrower, or say why it must go:
        None (fit), ``"broken"`` (mid-query, or found closed) or ``"reset_failed"``. Not asked of
        a connection its borrower closed or lost with an error it saw (BROKEN: the pool closes
        those without a reset). Its server-side cursors are closed first (WITH HOLD ones would
        outlive the rollback)."""
        raw, driver = slot.raw, self.driver
        if slot.named:
            self._close_named(slot.named)
        if slot.handlers:  # a borrower's notify/notice callbacks must not fire in the next one's
            for remover, callback in slot.handlers:
                with contextlib.suppress(ValueError):  # removed by the borrower already
                    getattr(raw, remover)(callback)
            slot.handlers = None
        try:
            status = driver.status(raw)
            if status == INTRANS or status == INERROR:
                if driver.knows_status:  # a generic driver always "is" in a transaction
                    self._warn_bad_return(slot, status)
                self._rollback(slot)
            elif status != IDLE:  # ACTIVE (a query in flight) or UNKNOWN (broken, closed)
                if status == ACTIVE:
                    self._warn_bad_return(slot, status)
                return "broken"
            if slot.return_flags & DIRTY:
                driver.restore(raw, slot.settings)
            if slot.return_flags & ADAPTERS and hasattr(driver, "restore_adapters"):  # not in the Protocol
                driver.restore_adapters(raw, slot.settings)
            slot.return_flags = 0
            if self.reset_callback is not None:
                self.reset_callback(raw)
                if driver.knows_status and (st := driver.status(raw)) != IDLE:
                    raise PoolError(f"reset callback left the connection in a transaction ({STATUS_NAMES[st]})")
            return None
        except Exception as e:
            logger.warning("pool %r: connection %d could not be reset: %s: %s",
                           self.name, slot.id, type(e).__name__, self.scrub(str(e)))  # fmt: skip
            return "reset_failed"

    def _rollback(self, slot: Slot) -> None:
        """End the transaction a borrower left open: through the handle's ``rollback`` when the
        borrower replaced it (a test's monkeypatch; psycopg_pool calls ``conn.rollback()``
        too), else the driver's. The handle is still alive here: the pool retires it after."""
        own = getattr(slot.handle, "__dict__", None)  # the borrower's own names on the handle
        replaced = own.get("rollback") if own else None
        if replaced is not None:
            replaced()
        else:
            self.driver.rollback(slot.raw)

    def seen(self, raw: Any) -> Settings:
        """The settings as a borrower left them (a returned handle reads them), asked before
        the reset restores the pool's: the driver's ``settings()``; () if the driver cannot
        read them on this connection."""
        try:
            return self.driver.settings(raw)
        except Exception:
            return ()

    def _close_named(self, cursors: list[Any]) -> None:
        for cur in cursors:
            try:
                if not cur.closed:
                    cur.close()
            except Exception as e:  # a broken connection: the reset decides its fate
                logger.debug("pool %r: closing a named cursor on return: %s", self.name, self.scrub(str(e)))
        cursors.clear()

    def _return_line_due(self, what: int) -> int | None:
        """At most one warning per BAD_RETURN_LOG_INTERVAL for each kind of bad return (a
        status, or DISCARDED): how many were not logged since the last one of its kind, or
        None when this one is not due."""
        now = self._clock()
        with self._lock:
            last = self._bad_returns.setdefault(what, [-1e9, 0])
            if now - last[0] < BAD_RETURN_LOG_INTERVAL:
                last[1] += 1
                return None
            suppressed, last[0], last[1] = last[1], now, 0
        return int(suppressed)

    def warn_discarded(self, slot: Slot) -> None:
        """A connection the return found unfit (mid-query, broken, its reset failed) is now
        closed and gone: say so once it is (psycopg_pool's "discarding closed connection",
        with the libpq state it shows, BAD), rate-limited like the warning that came before.
        Not called for a connection the borrower closed, or lost with an error it saw."""
        suppressed = self._return_line_due(DISCARDED)
        if suppressed is None:
            return
        more = f"; {suppressed} more since the last warning" if suppressed else ""
        logger.warning("pool %r: discarding connection %d, closed (BAD) at its return; a new one replaces it as "
                       "needed%s", self.name, slot.id, more)  # fmt: skip

    def _warn_bad_return(self, slot: Slot, status: int) -> None:
        """A return in a transaction, in error or mid-query points at an application bug (a
        missing commit, an unread error): say so, at most once per BAD_RETURN_LOG_INTERVAL per
        state, with how many were not logged in between."""
        suppressed = self._return_line_due(status)
        if suppressed is None:
            return
        # libpq's names for the states too (INTRANS...), as psycopg_pool's messages have them
        what = {INTRANS: "inside an open transaction (INTRANS, rolled back)",
                INERROR: "in a failed transaction (INERROR, rolled back)",
                ACTIVE: "with a query still running (ACTIVE, discarded)"}[status]  # fmt: skip
        more = f"; {suppressed} more such return(s) since the last warning" if suppressed else ""
        logger.warning("pool %r: connection %d was returned %s: commit or roll back before putconn%s",
                       self.name, slot.id, what, more)  # fmt: skip

    # -- closing ------------------------------------------------------------------------------
    def abort(self, raw: Any) -> None:
        """Cancel and cut the connection from another thread (the owner may be inside it)."""
        self.driver.abort(raw)

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


class CheckTimedOut(PoolError, ValidationTimeout):
    """A check callback ran past check_timeout. Its thread may still be inside the driver on
    the connection: the connection was aborted, and that thread closes it when it returns;
    nobody else may."""
