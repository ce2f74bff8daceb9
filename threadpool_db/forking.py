"""Fork safety: every live pool starts afresh in a child process.

A child must not close the connections it inherited: closing sends a Terminate message on a
socket the parent still uses. psycopg 3 already skips ``PQfinish`` for objects that cross a
fork, so dropping them is enough. Other drivers may not be so careful, so their connections are
kept referenced forever (never finalized) in the child: a few descriptors, once per fork.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .drivers import Driver
    from .pool import ConnectionPool

_pools: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()
_graveyard: list[Any] = []


def register(pool: ConnectionPool) -> None:
    _pools.add(pool)


def abandon(driver: Driver, raws: list[Any]) -> None:
    if driver.name != "psycopg":
        _graveyard.extend(raws)


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._after_fork_child()


def _after_fork_in_parent() -> None:
    for pool in list(_pools):
        try:
            pool._after_fork_parent()
        except Exception:  # a fork hook must never fail the fork
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent)
