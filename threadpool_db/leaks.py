"""Leak detection: who borrowed a connection, from where, and what that thread is doing now.

Cheap by construction. A borrow records a ``_Lease`` (thread, time, and, when stacks are
captured, the borrow-site stack as ``(code, lineno)`` pairs: no frame is kept, so no locals are
pinned). The watchdog is one daemon thread that scans the borrowed connections, sleeps until
the nearest deadline, and formats stacks only when it reports. A new borrow never needs to wake
it: its deadline lies a full threshold ahead, past the watchdog's next wake-up.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import weakref
from collections import deque
from time import monotonic
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from .errors import ConnectionReclaimed

if TYPE_CHECKING:
    from .base import Slot
    from .pool import ConnectionPool

logger = logging.getLogger("threadpool_db.leaks")

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_CAPTURES = ("off", "sampled", "full")
STACK_LIMIT = 64
REPORTS_KEPT = 100
Stack = tuple[tuple[CodeType, int], ...]


def capture_stack(limit: int = STACK_LIMIT) -> Stack:
    """The caller's stack, innermost first, without threadpool_db's own frames.

    Each frame becomes ``(code, bytecode offset)``: reading ``f_lasti`` is a field load, while
    ``f_lineno`` decodes the line table, so lines are worked out only when a report is made.
    """
    f: FrameType | None = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIR):
        f = f.f_back
    out: list[tuple[CodeType, int]] = []
    append = out.append
    while f is not None:
        append((f.f_code, f.f_lasti))
        f = f.f_back
        if len(out) >= limit:
            break
    return tuple(out)


def _line(code: CodeType, lasti: int) -> int:
    """The source line of bytecode offset ``lasti`` (what ``frame.f_lineno`` would say)."""
    if lasti >= 0:
        for start, end, line in code.co_lines():
            if start <= lasti < end and line is not None:
                return line
    return code.co_firstlineno


def format_stack(stack: Stack | None) -> str:
    """Outermost call first, like a traceback: file, line and function only (no source text)."""
    if not stack:
        return ""
    return "\n".join(f'  File "{c.co_filename}", line {_line(c, i)}, in {c.co_name}' for c, i in reversed(stack))


def site(stack: Stack | None) -> str:
    if not stack:
        return "<borrow site not captured>"
    code, lasti = stack[0]
    return f"{code.co_filename}:{_line(code, lasti)}"


def holder_stack(ident: int) -> str:
    """What thread ``ident`` is doing now: its live stack, file/line/function only."""
    frame: FrameType | None = sys._current_frames().get(ident)
    if frame is None:
        return "<thread has ended>"
    out: list[tuple[CodeType, int]] = []
    while frame is not None and len(out) < STACK_LIMIT:
        out.append((frame.f_code, frame.f_lasti))
        frame = frame.f_back
    del frame
    return format_stack(tuple(out))


class _Lease:
    """One borrow as the detector sees it."""

    __slots__ = ("slot", "thread", "ident", "start", "stack", "reported", "reclaimed", "record")

    def __init__(self, slot: Slot, thread: threading.Thread, start: float, stack: Stack | None):
        self.slot = slot
        self.thread = thread
        self.ident = thread.ident or 0
        self.start = start
        self.stack = stack
        self.reported = False
        self.reclaimed = False
        self.record: dict[str, Any] | None = None


class LeakDetector:
    """Per-pool leak bookkeeping plus its watchdog thread."""

    @classmethod
    def create(
        cls,
        pool: ConnectionPool,
        threshold: float | None,
        capture: str,
        rate: float,
        reclaim: bool,
        factor: float,
    ) -> LeakDetector | None:
        if capture not in _CAPTURES:
            raise ValueError(f"capture_stacks must be one of {', '.join(_CAPTURES)}, got {capture!r}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"stack_sample_rate must be between 0 and 1, got {rate!r}")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1.0:
            raise ValueError(f"reclaim_factor must be a number >= 1, got {factor!r}")
        if threshold is None:
            if reclaim:
                raise ValueError("reclaim_leaked=True needs a leak_threshold")
            return None
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            raise ValueError(f"leak_threshold must be a number > 0 or None, got {threshold!r}")
        return cls(pool, float(threshold), capture, float(rate), bool(reclaim), float(factor))

    def __init__(self, pool: ConnectionPool, threshold: float, capture: str, rate: float,
                 reclaim: bool, factor: float) -> None:  # fmt: skip
        self._pool_ref = weakref.ref(pool)
        self.threshold = threshold
        self.capture = capture
        self.rate = rate
        self.reclaim = reclaim
        self.reclaim_after = threshold * factor
        self._held: dict[int, int] = {}  # thread ident -> connections it holds now
        self._nested_warned: set[str] = set()
        self._init_state()

    def _init_state(self) -> None:
        # The watchdog waits on _cond; stop() notifies it. Nothing else needs to.
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._reports: deque[_Lease] = deque(maxlen=REPORTS_KEPT)
        self.detected = self.reclaimed = self.returned_late = self.thread_died = self.nested = 0
        self._held.clear()

    # -- hot path -----------------------------------------------------------------------------
    def on_borrow(self, slot: Slot, thread: threading.Thread | None = None) -> None:
        capture = self.capture
        if capture == "full" or (capture == "sampled" and random.random() < self.rate):
            stack: Stack | None = capture_stack()
        else:
            stack = None
        if thread is None:
            thread = threading.current_thread()
        lease = _Lease(slot, thread, slot.borrowed_at, stack)
        slot.lease = lease
        ident = lease.ident
        n = self._held.get(ident, 0) + 1
        self._held[ident] = n
        if n > 1:
            self._warn_nested(lease, n)

    def _unhold(self, ident: int) -> None:
        n = self._held.get(ident, 1) - 1
        if n > 0:
            self._held[ident] = n
        else:
            self._held.pop(ident, None)

    def on_return(self, lease: _Lease, now: float) -> None:
        self._unhold(lease.ident)
        if lease.reported and not lease.reclaimed:
            self.returned_late += 1
            pool = self._pool_ref()
            logger.info(
                "%s: previously reported leak returned after %.1f s: connection %d of pool %r, thread %r",
                site(lease.stack), now - lease.start, lease.slot.id,
                pool.name if pool else "?", lease.thread.name,
            )  # fmt: skip

    def _warn_nested(self, lease: _Lease, n: int) -> None:
        self.nested += 1
        key = f"{lease.thread.name}@{site(lease.stack)}"
        if key in self._nested_warned or len(self._nested_warned) > 1000:
            return
        self._nested_warned.add(key)
        pool = self._pool_ref()
        logger.warning(
            "%s: thread %r borrows connection %d of pool %r while already holding %d: "
            "a thread that waits for a second connection can deadlock the pool",
            site(lease.stack), lease.thread.name, n, pool.name if pool else "?", n - 1,
        )  # fmt: skip

    # -- the watchdog -------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            pool = self._pool_ref()
            name = f"{pool.name if pool else '?'}-leak-watchdog"
            self._thread = threading.Thread(target=_watchdog, args=(self._pool_ref, self), name=name, daemon=True)
        self._thread.start()

    def stop(self, join: bool = True) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            t = self._thread
        if join and t is not None and t is not threading.current_thread():
            t.join(5.0)

    def after_fork(self) -> None:
        self._init_state()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def scan(self, pool: ConnectionPool) -> float:
        """Report and reclaim what is due; return the seconds until the next deadline."""
        now = monotonic()
        due: list[_Lease] = []
        reclaim: list[_Lease] = []
        nearest = now + self.threshold
        with pool._lock:
            for slot in pool._all.values():
                lease = slot.lease
                if lease is None or lease.reclaimed:
                    continue
                held = now - lease.start
                if not lease.reported:
                    if held >= self.threshold:
                        due.append(lease)
                    else:
                        nearest = min(nearest, lease.start + self.threshold)
                        continue
                if not lease.thread.is_alive() or (self.reclaim and held >= self.reclaim_after):
                    reclaim.append(lease)
                elif self.reclaim:
                    nearest = min(nearest, lease.start + self.reclaim_after)
        for lease in due:
            self._report(pool, lease, now)
        for lease in reclaim:
            self._reclaim(pool, lease, now)
        return max(nearest - monotonic(), 0.01)

    def _report(self, pool: ConnectionPool, lease: _Lease, now: float) -> None:
        held = now - lease.start
        rec = _record(pool, lease.slot, lease.thread, lease.ident, held, lease)
        alive = rec["thread_alive"]
        lease.record = rec
        lease.reported = True
        with pool._lock:
            self.detected += 1
            if not alive:
                self.thread_died += 1
            self._reports.append(lease)
        state = "has ENDED without returning it" if not alive else "is alive"
        logger.warning(
            "%s: suspected leak: connection %d (backend pid %s) of pool %r held for %.1f s by "
            "thread %r (ident %d), which %s\nBorrowed at:\n%s\nHolder thread now:\n%s",
            rec["borrow_site"], lease.slot.id, lease.slot.pid, pool.name, held,
            lease.thread.name, lease.ident, state, rec["borrow_stack"], rec["holder_stack"],
        )  # fmt: skip

    def _reclaim(self, pool: ConnectionPool, lease: _Lease, now: float) -> None:
        slot = lease.slot
        held = now - lease.start
        with pool._lock:
            # Critical section: take the connection from its handle only if it is still out
            # under this very lease; a return that won the race leaves it alone.
            h = slot.handle
            if h is None or slot.lease is not lease or slot.id not in pool._all:
                return
            h._retire(ConnectionReclaimed(
                f"connection was reclaimed as leaked after {held:.1f} s, borrowed at {site(lease.stack)} "
                f"by thread {lease.thread.name!r} (pool {pool.name!r})"
            ))  # fmt: skip
            slot.handle = None
            slot.lease = None
            lease.reclaimed = True
            if lease.record is not None:
                lease.record["reclaimed"] = True
            self.reclaimed += 1
            pool._discarded_broken += 1
            pool._discard_locked(slot)
        self._unhold(lease.ident)
        dead = not lease.thread.is_alive()
        logger.warning("%s: reclaimed leaked connection %d (backend pid %s) of pool %r after %.1f s%s",
                       site(lease.stack), slot.id, slot.pid, pool.name, held,
                       " (its thread has ended)" if dead else "")  # fmt: skip
        # No lock held: cancel and cut the socket (the owner may be mid-query).
        pool._driver.abort(slot.raw)
        if dead:
            pool._close_raw(slot)

    # -- diagnostics --------------------------------------------------------------------------
    def leaks(self) -> list[dict[str, Any]]:
        pool = self._pool_ref()
        if pool is None:
            return []
        with pool._lock:
            current = [
                dict(lease.record) for lease in self._reports
                if lease.record is not None and (lease.reclaimed or lease.slot.lease is lease)
            ]  # fmt: skip
        return current

    def reports(self) -> list[dict[str, Any]]:
        """The last reports made (current or not), oldest first."""
        pool = self._pool_ref()
        if pool is None:
            return []
        with pool._lock:
            return [dict(lease.record) for lease in self._reports if lease.record is not None]

    def stats_locked(self) -> dict[str, int]:
        return {
            "leaks_detected": self.detected,
            "leaks_reclaimed": self.reclaimed,
            "leaks_returned_late": self.returned_late,
            "borrower_thread_died": self.thread_died,
            "nested_borrows": self.nested,
        }

    def holders_summary_locked(self, top: int = 3) -> str:
        now = monotonic()
        leases = sorted((s.lease for s in self._pool_all() if s.lease is not None), key=lambda x: x.start)
        if not leases:
            return ""
        parts = [f"thread {x.thread.name!r} for {now - x.start:.1f} s at {site(x.stack)}" for x in leases[:top]]
        return "; top holders: " + ", ".join(parts)

    def _pool_all(self) -> list[Slot]:
        pool = self._pool_ref()
        return list(pool._all.values()) if pool is not None else []


def _watchdog(ref: weakref.ReferenceType[ConnectionPool], det: LeakDetector) -> None:
    delay = 0.0
    while True:
        with det._cond:
            if not det._stopping and delay:
                det._cond.wait(delay)
            if det._stopping:
                return
        pool = ref()
        if pool is None or pool.closed:
            return
        try:
            delay = det.scan(pool)
        except Exception:
            logger.exception("pool %r: unexpected error in the leak watchdog", pool.name)
            delay = 1.0
        del pool


def describe_borrowed(pool: ConnectionPool) -> list[dict[str, Any]]:
    """A record for every connection out now, leak or not."""
    now = monotonic()
    with pool._lock:
        out = [(s, s.lease, s.owner, s.borrowed_at) for s in pool._all.values() if s.handle is not None]
    return [
        _record(pool, slot, lease.thread if lease is not None else _thread_by_ident(owner), owner, now - start, lease)
        for slot, lease, owner, start in out
    ]


def _record(pool: ConnectionPool, slot: Slot, thread: threading.Thread | None, ident: int, held: float,
            lease: _Lease | None) -> dict[str, Any]:  # fmt: skip
    """What a leak report and pool.borrowed() say about one borrowed connection."""
    alive = thread is not None and thread.is_alive()
    if lease is None:
        where, stack = "<leak detection off>", ""
    else:
        where = site(lease.stack)
        stack = format_stack(lease.stack) or "<not captured: capture_stacks is off or not sampled>"
    return {
        "pool": pool.name,
        "connection_id": slot.id,
        "backend_pid": slot.pid,
        "thread_name": thread.name if thread is not None else "?",
        "thread_ident": ident,
        "thread_alive": alive,
        "held_for": round(held, 3),
        "borrow_site": where,
        "borrow_stack": stack,
        "holder_stack": holder_stack(ident) if alive else "<thread has ended>",
        "reclaimed": False,
        "suspected_leak": bool(lease is not None and lease.reported),
    }


def _thread_by_ident(ident: int) -> threading.Thread | None:
    for t in threading.enumerate():
        if t.ident == ident:
            return t
    return None


__all__ = ["ConnectionReclaimed", "LeakDetector", "capture_stack", "describe_borrowed", "format_stack"]
