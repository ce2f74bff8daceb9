"""Outside requests: give the connections back when a task or a command is done.

Django returns a request's connections at ``request_finished``. Code that runs outside a
request (a Celery task, a thread of a ``ThreadPoolExecutor``, a management command, a cron
script) has no such end: its thread keeps its connection until the thread ends, and the pool
sees a leak. ``connection_scope`` is that end, as a context manager or a decorator::

    @connection_scope
    def nightly_report(): ...

    with connection_scope():
        ...

On entry and exit it calls ``release_connections()``: each of this thread's connections goes
back to its pool, unless it is inside an ``atomic()`` block (an outer scope, or the caller,
still needs it: it goes back at that scope's end). Unpooled connections are closed as
``close_old_connections`` would close them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from django.db import connections

F = TypeVar("F", bound=Callable[..., Any])


def release_connections(**_signal_kwargs: Any) -> None:
    """Give back every connection this thread holds that is outside an atomic block. Takes and
    ignores keyword arguments, so it can be connected to a signal as it is (Celery's
    ``task_postrun``)."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and not conn.in_atomic_block:
            conn.close()


@contextlib.contextmanager
def _scope() -> Iterator[None]:
    release_connections()
    try:
        yield
    finally:
        release_connections()


@overload
def connection_scope(func: F) -> F: ...
@overload
def connection_scope(func: None = None) -> contextlib.AbstractContextManager[None]: ...
def connection_scope(func: F | None = None) -> F | contextlib.AbstractContextManager[None]:
    """``with connection_scope():`` or ``@connection_scope`` (with or without parentheses)."""
    if func is None:
        return _scope()

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _scope():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
