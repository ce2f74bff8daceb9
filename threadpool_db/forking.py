"""Fork safety: every live pool starts afresh in a child process.

A child must not close the connections it inherited: closing sends a Terminate message on a
socket the parent still uses. psycopg 3 already skips ``PQfinish`` for objects that cross a
fork, so dropping them is enough. Other drivers may not be so careful, so their connections are
kept referenced forever (never finalized) in the child: a few descriptors, once per fork.

Around the fork, as CPython's ``concurrent.futures.thread`` does: ``before`` takes each pool's
lock, so the child never inherits a critical section half done; ``after_in_parent`` releases
it; the child builds its state (locks included) anew. Pools register three bound methods,
held weakly: this module names nothing private of theirs.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("threadpool_db")

# One entry per live pool: weak methods (before, child, parent). Guarded by _registry_lock.
_hooks: dict[int, tuple[weakref.WeakMethod[Any], weakref.WeakMethod[Any], weakref.WeakMethod[Any]]] = {}
_registry_lock = threading.Lock()
# Keys of pools collected since: a finalizer may run inside any allocation (even while
# _registry_lock is held by the same thread), so it only appends here; the next reader purges.
_gone: list[int] = []
_keys = itertools.count()
_held: list[Callable[[], None]] = []  # the parent's "release" calls for the locks taken in before
_graveyard: list[Any] = []


def register(key: object, before: Callable[[], Callable[[], None] | None], child: Callable[[], None],
             parent: Callable[[], None]) -> None:  # fmt: skip
    """``before()`` takes the pool's lock and returns the callable that releases it (or None);
    ``child()`` and ``parent()`` run after the fork in each process."""
    k = next(_keys)
    entry = (weakref.WeakMethod(before), weakref.WeakMethod(child), weakref.WeakMethod(parent))  # type: ignore[arg-type]
    weakref.finalize(key, _gone.append, k)
    with _registry_lock:
        _purge_locked()
        _hooks[k] = entry


def _purge_locked() -> None:
    while _gone:
        _hooks.pop(_gone.pop(), None)


def abandon(driver_name: str, raws: list[Any]) -> None:
    if driver_name != "psycopg":
        _graveyard.extend(raws)


def _live(i: int) -> list[Callable[..., Any]]:
    with _registry_lock:
        _purge_locked()
        entries = list(_hooks.values())
    return [fn for fn in (e[i]() for e in entries) if fn is not None]


def _before() -> None:
    for before in _live(0):
        try:
            release = before()
        except Exception:  # a fork hook must never fail the fork
            continue
        if release is not None:
            _held.append(release)


def _after_in_parent() -> None:
    while _held:
        _held.pop()()
    for parent in _live(2):
        try:
            parent()
        except Exception:
            logger.exception("threadpool_db: a pool's after-fork hook failed in the parent")


def _after_in_child() -> None:
    _held.clear()  # the child replaces the locks rather than releasing them
    for child in _live(1):
        child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
