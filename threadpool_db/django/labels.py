"""What each borrow is for: the request a thread is serving, from Django's ``request_started``
and ``request_finished`` signals, so a leak report names it (``"GET /orders/7"``).

A context variable, not a thread-local: an ASGI server's requests share threads. A thread that
a view starts (``ThreadPoolExecutor``) does not inherit it, so its borrows carry no label;
the report names that thread instead. Only the method and the path are kept: no query string
(it may carry tokens), no headers.
"""

from __future__ import annotations

import contextvars
from typing import Any

from django.core.signals import request_finished, request_started

PATH_MAX = 200  # characters of the path kept in a label
_request: contextvars.ContextVar[str | None] = contextvars.ContextVar("threadpool_db_django_request", default=None)


def current() -> str | None:
    """The label of the request this thread (or task) serves now, or None."""
    return _request.get()


def _started(sender: Any, environ: dict[str, Any] | None = None, scope: dict[str, Any] | None = None,
             **_: Any) -> None:  # fmt: skip
    if environ is not None:  # WSGI
        method, path = environ.get("REQUEST_METHOD", "?"), environ.get("PATH_INFO", "")
    elif scope is not None:  # ASGI
        method, path = scope.get("method", "?"), scope.get("path", "")
    else:
        return
    _request.set(f"{method} {path[:PATH_MAX]}")


def _finished(sender: Any, **_: Any) -> None:
    _request.set(None)


# dispatch_uid: connected once however often this module is imported
request_started.connect(_started, dispatch_uid="threadpool_db.django.labels.started")
request_finished.connect(_finished, dispatch_uid="threadpool_db.django.labels.finished")
