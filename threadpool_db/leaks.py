"""Leak detection: who borrowed a connection, from where, and what that thread is doing now.

Cheap by construction, so it can be on by default. A borrow records its *site*: the first
frame outside threadpool_db, as ``(code, bytecode offset, frame id)``, one frame walk with no
formatting and no frame kept (a frame would pin its locals). With ``capture_stacks`` it also
keeps the whole stack the same way (``"sampled"``: a share of borrows; ``"full"``: all). The
pool stores both on its own record of the connection, under its lock, with the handle, so the
detector needs no object per borrow.

The watchdog is one daemon thread. It reads a snapshot of the borrowed connections through a
narrow seam (:class:`LeaseTable`), sleeps until the nearest deadline, and formats only when it
reports. A report says first whether the borrowing code is still running (its frame is on the
holder's stack: *busy* in a long operation) or not (*escaped*: stored, handed to another
thread, or forgotten), or whether the borrower thread ended. Stacks show the user's frames;
runs of standard-library, gunicorn, Flask and threadpool_db frames collapse to a count.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import sysconfig
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from types import CodeType, FrameType
from typing import Any, Protocol

from .errors import ConnectionReclaimed

logger = logging.getLogger("threadpool_db.leaks")

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
STACK_LIMIT = 64  # frames of a holder's live stack in a report
CAPTURE_LIMIT = 24  # frames kept of a borrow's stack: the user's end; the outer ones are server loops
REPORTS_KEPT = 100
Stack = tuple[tuple[CodeType, int], ...]
# What a borrow records: (code, bytecode offset, id of the frame (while it runs), the whole
# stack when captured else None). A tuple here; the C recorder's Site reads the same way.
Site = tuple[CodeType, int, int, "Stack | None"]
_getframe = sys._getframe

# The borrow-site recorder in C, when the install could build it (see _sight.c); the
# environment variable THREADPOOL_DB_PURE_PYTHON=1 turns it off (the benchmark compares both).
NATIVE: Any = None
if not os.environ.get("THREADPOOL_DB_PURE_PYTHON"):
    try:
        from ._sight import Sight as NATIVE
    except ImportError:  # not built: no compiler at install time, or Python 3.10
        pass

# Frames a person reading a report does not need to see one by one.
_STDLIB = (sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib"))
_FRAMEWORK_DIRS = tuple({os.path.normpath(p) + os.sep for p in _STDLIB if p})


def _framework(filename: str) -> bool:
    """Not the user's own code: threadpool_db, the standard library, and installed packages
    (gunicorn, Flask, werkzeug, the driver...): what a person skims past in a report."""
    if filename.startswith(_PKG_DIR) or filename.startswith("<frozen "):
        return True
    if "site-packages" in filename or "dist-packages" in filename:
        return True
    return filename.startswith(_FRAMEWORK_DIRS)


# -- recording (the borrow path) --------------------------------------------------------------
def _walk(f: FrameType | None, limit: int = CAPTURE_LIMIT) -> Stack:
    """``(code, offset)`` of ``f`` and its callers, innermost first. Reading ``f_lasti`` is a
    field load, while ``f_lineno`` decodes the line table, so lines are worked out only when
    a report is made."""
    out: list[tuple[CodeType, int]] = []
    append = out.append
    while f is not None:
        append((f.f_code, f.f_lasti))
        f = f.f_back
        if len(out) >= limit:
            break
    return tuple(out)


# -- formatting (only when somebody reads) ----------------------------------------------------
def _line(code: CodeType, lasti: int) -> int:
    """The source line of bytecode offset ``lasti`` (what ``frame.f_lineno`` would say)."""
    if lasti >= 0:
        for start, end, line in code.co_lines():
            if start <= lasti < end and line is not None:
                return line
    return code.co_firstlineno


def where(code: CodeType, lasti: int) -> str:
    return f"{code.co_filename}:{_line(code, lasti)}"


def site_text(site: Site | None, missing: str = "<unknown>") -> str:
    """``file:line`` of a recorded site, or ``missing`` when none was recorded."""
    return where(site[0], site[1]) if site else missing


def format_stack(stack: Stack | None) -> str:
    """Outermost call first, like a traceback: file, line and function only (no source text)."""
    if not stack:
        return ""
    return "\n".join(f'  File "{c.co_filename}", line {_line(c, i)}, in {c.co_name}' for c, i in reversed(stack))


def format_for_people(stack: Stack | None) -> str:
    """As format_stack, but runs of framework frames (standard library, gunicorn, Flask,
    threadpool_db) collapse to one line with their count: the user's own frames stand out."""
    if not stack:
        return ""
    lines: list[str] = []
    hidden = 0
    for c, i in reversed(stack):
        if _framework(c.co_filename):
            hidden += 1
            continue
        if hidden:
            lines.append(f"  … {hidden} framework frame{'s' if hidden > 1 else ''}")
            hidden = 0
        lines.append(f'  File "{c.co_filename}", line {_line(c, i)}, in {c.co_name}')
    if hidden:
        lines.append(f"  … {hidden} framework frame{'s' if hidden > 1 else ''}")
    return "\n".join(lines)


def live_stack(ident: int) -> tuple[Stack, list[int]] | None:
    """Thread ``ident``'s stack now, innermost first, and the ids of its frames."""
    frame: FrameType | None = sys._current_frames().get(ident)
    if frame is None:
        return None
    out: list[tuple[CodeType, int]] = []
    ids: list[int] = []
    while frame is not None and len(out) < STACK_LIMIT:
        out.append((frame.f_code, frame.f_lasti))
        ids.append(id(frame))
        frame = frame.f_back
    del frame
    return tuple(out), ids


def holder_stack(ident: int) -> str:
    """What thread ``ident`` is doing now: its live stack, file/line/function only."""
    live = live_stack(ident)
    return format_stack(live[0]) if live else "<thread has ended>"


def still_running(borrowed: Site | None, live: tuple[Stack, list[int]] | None) -> bool | None:
    """Is the frame that borrowed still on the holder's stack? None when it cannot be told."""
    if borrowed is None or live is None:
        return None
    code, fid = borrowed[0], borrowed[2]
    stack, ids = live
    return any(i == fid and c is code for (c, _), i in zip(stack, ids, strict=True))


def _user_frame(f: FrameType | None, skip: str | tuple[str, ...] = _PKG_DIR) -> FrameType | None:
    """The first frame from ``f`` outwards whose file is in none of the ``skip`` folders
    (threadpool_db's own, by default): the user's line, however many of our layers stand
    above it, or None."""
    while f is not None and f.f_code.co_filename.startswith(skip):
        f = f.f_back
    return f


def borrower(slot: Lease, by_ident: dict[int, threading.Thread] | None = None) -> threading.Thread | None:
    """The thread that borrowed ``slot``: the Thread object recorded with the borrow, alive or
    not. Identity by object: a thread's ident is reused once it ends, so looking the ident up
    among the running threads would name whoever got it next. Only when no Thread was recorded
    (detection off, or a borrow with no frame of the user's) is the ident all there is: then
    the running thread with that ident (``by_ident``, or threading's table), if any."""
    if slot.thread is not None:
        return slot.thread
    if by_ident is None:
        by_ident = {t.ident: t for t in threading.enumerate()}
    return by_ident.get(slot.owner)


def holders_text(holders: list[Lease], now: float) -> str:
    """The top holders of a pool, for its timeout message: thread, held for, borrow site."""
    out = []
    for s in holders:
        t = borrower(s)
        out.append(
            f"thread {t.name if t is not None else '?'!r} for {now - s.borrowed_at:.1f} s at {site_text(s.site)}"
        )
    return ", ".join(out)


def held_text(held: Lease) -> str:
    """A timeout's note on a connection the waiting thread holds itself: a nested borrow."""
    at = site_text(held.site)
    return (
        f"this thread already holds connection {held.id} of this pool, borrowed at {at}: a thread that waits "
        "for a second connection while holding one can deadlock the pool"
    )


# -- the seam ---------------------------------------------------------------------------------
class Lease(Protocol):
    """What the detector reads of one borrowed connection (a Slot: see records.py)."""

    id: int
    pid: int | None
    handle: Any
    owner: int
    thread: threading.Thread | None  # the borrower (kept when detection is on), alive or not
    borrowed_at: float
    site: Site | None
    report: dict[str, Any] | None
    context: str | None  # what the borrow was for, when a framework said (a request)
    shared: bool  # lent to other threads on purpose: its thread's end is no leak


class LeaseTable(Protocol):
    """The four things the leak detector may ask of its pool."""

    name: str

    def _leased(self) -> list[Lease]: ...

    def _mark_reported(self, slot: Lease, handle: Any, record: dict[str, Any]) -> bool: ...

    def _reclaim(self, slot: Lease, handle: Any, error: ConnectionReclaimed) -> bool: ...

    def _now(self) -> float: ...


# -- the detector -----------------------------------------------------------------------------
class LeakDetector:
    """Per-pool leak reports and the watchdog thread. Its counters and report list are its
    own, guarded by its own lock (``_lock``), whichever thread updates them. Its parameters
    are validated by config.PoolConfig."""

    def __init__(self, threshold: float, capture: str, rate: float, reclaim: bool, factor: float,
                 framework_dirs: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.threshold = threshold
        self.capture = capture
        self.rate = rate
        self.reclaim = reclaim
        self.reclaim_after = threshold * factor
        # The hot path: what a borrow records, called by getconn with no arguments. In C
        # (_sight.c) when it was built, else the same walk in Python (below).
        self._every = capture == "full"
        self._share = rate if capture == "sampled" else 0.0  # of borrows whose stack is kept
        self.sight: Callable[[], Site | None]
        # What a return records (putconn calls it the same way): the site only, never a stack,
        # so that using a returned handle can say where it went back.
        self.sight_return: Callable[[], Site | None]
        # the folders whose frames are never the borrower's: ours, and a framework's on top of us
        self._skip: str | tuple[str, ...] = (_PKG_DIR, *framework_dirs) if framework_dirs else _PKG_DIR
        if NATIVE is not None:  # depth 1: C code has no frame, so 1 is getconn's caller
            self.sight = NATIVE(self._skip, 1, CAPTURE_LIMIT, self._every, self._share)
            self.sight_return = NATIVE(self._skip, 1, CAPTURE_LIMIT, False, 0.0)
        else:
            self.sight = self._sight_python
            self.sight_return = self._site_python
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # guards everything below
        # The watchdog waits on _cond until the next deadline (scan's answer: the first lease to
        # cross the threshold, or a reclaim due; with none out, one threshold from now). Only
        # stop() notifies it (the pool closing). A borrow never needs to: a lease that starts
        # after a scan crosses the threshold after that scan's wake-up time.
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._reports: deque[dict[str, Any]] = deque(maxlen=REPORTS_KEPT)
        self._nested_warned: set[str] = set()  # call sites warned about (a nested borrow that waits)
        self.detected = self.reclaimed = self.returned_late = self.thread_died = self.nested = 0

    # -- the borrow path (called by the pool before it takes its lock) -------------------------
    def _sight_python(self) -> Site | None:
        """The pure-Python recorder, for where _sight.c was not built: the first frame outside
        threadpool_db above getconn (depth 2 from here), and its whole stack for every borrow
        ("full") or a share of them ("sampled")."""
        f = _user_frame(_getframe(2), self._skip)
        if f is None:
            return None
        code = f.f_code
        share = self._share
        if self._every or (share and random.random() < share):
            return code, f.f_lasti, id(f), _walk(f)
        return code, f.f_lasti, id(f), None

    def _site_python(self) -> Site | None:
        """The pure-Python site-only recorder (what a return records): the caller's first
        frame outside the skipped folders, no stack."""
        f = _user_frame(_getframe(2), self._skip)
        return None if f is None else (f.f_code, f.f_lasti, id(f), None)

    def on_return(self, record: dict[str, Any], held: float) -> None:
        """A reported connection came back: say so wherever the report shows."""
        with self._lock:
            if record.get("reclaimed") or record.get("returned"):
                return
            record["returned"] = True
            record["returned_after"] = round(held, 3)
            self.returned_late += 1
        logger.info("%s: previously reported leak returned after %.1f s: connection %d of pool %r, thread %r",
                    record["borrow_site"], held, record["connection_id"], record["pool"],
                    record["thread_name"])  # fmt: skip

    def saw_nested(self, pool_name: str, earlier: Lease, site_now: Site | None, thread: threading.Thread,
                   waits: bool) -> None:  # fmt: skip
        """The pool saw this thread take the last idle connection, or wait, while holding
        ``earlier``: a real nested borrow if the frame that borrowed ``earlier`` is still running
        on this thread (otherwise that one escaped: the watchdog reports it). Every one counts in
        ``nested_borrows``; only one that ``waits`` can deadlock, and only that one is logged,
        at WARNING, once per call site (code that nests on purpose in a pool with room says
        nothing)."""
        if earlier.thread is not None and earlier.thread is not thread:
            return  # held by a thread that ended and whose ident this one got: not this thread's
        live = live_stack(thread.ident or 0)
        if not still_running(earlier.site, live):
            return
        second = site_text(site_now)
        with self._lock:
            self.nested += 1
            if not waits or second in self._nested_warned or len(self._nested_warned) > 1000:
                return
            self._nested_warned.add(second)
        first = site_text(earlier.site)
        logger.warning(
            "%s: thread %r waits for a connection of pool %r while already holding connection %d (borrowed at "
            "%s, still running): if every connection is held by such a thread, none is ever returned (a "
            "deadlock until the timeout)", second, thread.name, pool_name, earlier.id, first,
        )  # fmt: skip

    # -- the watchdog -------------------------------------------------------------------------
    def start(self, table: LeaseTable) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=_watchdog, args=(weakref.ref(table), self),
                                            name=f"{table.name}-leak-watchdog", daemon=True)  # fmt: skip
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

    def scan(self, table: LeaseTable) -> float:
        """Report and reclaim what is due; return the seconds until the next deadline."""
        now = table._now()
        # A lease that starts after this scan crosses the threshold after ``nearest``'s cap:
        # so no borrow ever has to wake the watchdog (the borrow path stays free of it).
        nearest = now + self.threshold
        threads: dict[int, threading.Thread] | None = None  # by ident, only for a slot with no Thread
        for slot in table._leased():
            handle, start, record = slot.handle, slot.borrowed_at, slot.report
            if handle is None:
                continue
            held = now - start
            if record is None:
                if held < self.threshold:
                    nearest = min(nearest, start + self.threshold)
                    continue
                if slot.thread is None and threads is None:
                    threads = {t.ident: t for t in threading.enumerate()}
                thread = borrower(slot, threads)
                record = self._report(table, slot, handle, thread, held)
                if record is None:
                    continue
            elif record.get("reclaimed"):
                continue
            else:
                thread = borrower(slot)
            alive = (record["thread_alive"] and thread is not None and thread.is_alive()) or slot.shared
            if not alive or (self.reclaim and held >= self.reclaim_after):
                self._reclaim(table, slot, handle, record, held, alive)
            elif self.reclaim:
                nearest = min(nearest, start + self.reclaim_after)
        return max(nearest - table._now(), 0.01)

    def _report(self, table: LeaseTable, slot: Lease, handle: Any, thread: threading.Thread | None,
                held: float) -> dict[str, Any] | None:  # fmt: skip
        rec = describe(table.name, slot, thread, held, reported=True)
        if not table._mark_reported(slot, handle, rec):
            return None  # returned meanwhile
        with self._lock:
            self.detected += 1
            if not rec["thread_alive"]:
                self.thread_died += 1
            self._reports.append(rec)
        logger.warning(
            "%s: suspected leak in pool %r by thread %r: %s\nconnection %d (backend pid %s) held for %.1f s "
            "(thread ident %d)\nBorrowed at:\n%s\nHolder thread now:\n%s",
            rec["borrow_site"], table.name, rec["thread_name"], rec["summary"], slot.id, slot.pid, held,
            slot.owner, rec["borrow_stack"] or "  " + rec["borrow_site"], rec["holder_stack"],
        )  # fmt: skip
        return rec

    def _reclaim(self, table: LeaseTable, slot: Lease, handle: Any, record: dict[str, Any], held: float,
                 alive: bool) -> None:  # fmt: skip
        error = ConnectionReclaimed(
            f"connection was reclaimed as leaked after {held:.1f} s, borrowed at {record['borrow_site']} "
            f"by thread {record['thread_name']!r} (pool {table.name!r})"
        )
        if not table._reclaim(slot, handle, error):
            return  # a return won the race
        with self._lock:
            record["reclaimed"] = True
            self.reclaimed += 1
        logger.warning("%s: reclaimed leaked connection %d (backend pid %s) of pool %r after %.1f s%s",
                       record["borrow_site"], slot.id, slot.pid, table.name, held,
                       " (its thread has ended)" if not alive else "")  # fmt: skip

    # -- diagnostics --------------------------------------------------------------------------
    def leaks(self) -> list[dict[str, Any]]:
        """Current suspects: reported and neither returned nor reclaimed... and reclaimed ones."""
        with self._lock:
            return [dict(r) for r in self._reports if not r.get("returned")]

    def reports(self) -> list[dict[str, Any]]:
        """The last reports made (current or not), oldest first."""
        with self._lock:
            return [dict(r) for r in self._reports]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "leaks_detected": self.detected,
                "leaks_reclaimed": self.reclaimed,
                "leaks_returned_late": self.returned_late,
                "borrower_thread_died": self.thread_died,
                "nested_borrows": self.nested,
            }


def _watchdog(ref: weakref.ReferenceType[LeaseTable], det: LeakDetector) -> None:
    delay = 0.0
    while True:
        with det._cond:
            if not det._stopping and delay:
                det._cond.wait(delay)
            if det._stopping:
                return
        table = ref()
        if table is None or getattr(table, "closed", False):
            return
        try:
            delay = det.scan(table)
        except Exception:
            logger.exception("pool %r: unexpected error in the leak watchdog", table.name)
            delay = 1.0
        del table


def describe_all(pool_name: str, leased: Sequence[Lease], now: float) -> list[dict[str, Any]]:
    """``describe`` for each connection out now (pool.borrowed())."""
    threads = {t.ident: t for t in threading.enumerate()} if any(s.thread is None for s in leased) else None
    return [describe(pool_name, s, borrower(s, threads), now - s.borrowed_at, reported=s.report is not None)
            for s in leased]  # fmt: skip


def describe(
    pool_name: str, slot: Lease, thread: threading.Thread | None, held: float, reported: bool = False
) -> dict[str, Any]:
    """What a leak report and pool.borrowed() say about one borrowed connection. ``thread``:
    its borrower (see :func:`borrower`), whose name outlives it."""
    alive = thread is not None and thread.is_alive()
    live = live_stack(thread.ident or 0) if alive else None  # type: ignore[union-attr]
    if live is not None and not thread.is_alive():  # type: ignore[union-attr]
        # it ended between the two reads: the stack under its ident may be a newer thread's
        alive, live = False, None
    who = thread or slot.thread
    borrowed = slot.site
    at = site_text(borrowed, "<borrow site not captured>")
    stack = borrowed[3] if borrowed else None
    func = borrowed[0].co_name if borrowed else "?"
    running = still_running(borrowed, live)
    if not alive:
        state = "thread ended"
        summary = f"thread ended: borrowed at {at} in {func}() by a thread that has ENDED without returning it"
        if slot.shared:
            summary += " (it shared the connection with other threads, so it is not reclaimed)"
    elif running is False:
        state = "escaped"
        now_at = _innermost_user_frame(live)
        summary = (f"escaped: borrowed at {at} in {func}(), which has returned; the thread is now "
                   f"{'at ' + now_at if now_at else 'serving something else'}")  # fmt: skip
    else:
        state = "busy"
        now_at = _innermost_user_frame(live)
        summary = (f"busy: borrowed at {at} in {func}(), which is still running"
                   f"{' (now at ' + now_at + ')' if now_at else ''}")  # fmt: skip
    if slot.context:
        summary += f"; borrowed for {slot.context}"
    return {
        "pool": pool_name,
        "connection_id": slot.id,
        "backend_pid": slot.pid,
        "thread_name": who.name if who is not None else "?",
        "thread_ident": slot.owner,
        "thread_alive": alive,
        "held_for": round(held, 3),
        "borrow_site": at,
        "borrow_function": func,
        "context": slot.context,
        "state": state,
        "escaped": state == "escaped",
        "summary": summary,
        "borrow_stack": format_for_people(stack),
        "borrow_stack_full": format_stack(stack),
        "holder_stack": format_for_people(live[0]) if live else "<thread has ended>",
        "holder_stack_full": format_stack(live[0]) if live else "<thread has ended>",
        "reclaimed": False,
        "returned": False,
        "returned_after": None,
        "suspected_leak": reported,
    }


def _innermost_user_frame(live: tuple[Stack, list[int]] | None) -> str | None:
    if not live:
        return None
    for code, lasti in live[0]:
        if not _framework(code.co_filename):
            return f"{where(code, lasti)} in {code.co_name}()"
    return None


__all__ = ["ConnectionReclaimed", "LeakDetector", "LeaseTable", "describe", "format_stack"]
