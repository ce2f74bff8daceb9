"""``PoolTimeoutMiddleware``: a pool that has no connection to give becomes HTTP 503 with
``Retry-After``, not a 500.

Add ``"threadpool_db.django.middleware.PoolTimeoutMiddleware"`` to ``MIDDLEWARE``. It answers
our ``PoolTimeout`` and ``TooManyWaiters`` (backpressure: "database busy") and
``PoolConfigError`` (the database refuses the configuration: "database unavailable"), also when
Django's ``wrap_database_errors`` turned them into ``django.db.OperationalError`` (the pool's
error is then its ``__cause__``). ``settings.THREADPOOL_DB_RETRY_AFTER`` (seconds, default 1)
is the header. The body is JSON and says nothing about the database (host, port, role, the
driver's text): those go to the log, as in the Flask extension.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from ..errors import PoolConfigError, PoolError, PoolTimeout, TooManyWaiters

logger = logging.getLogger("threadpool_db.django")

_ANSWERED = (PoolTimeout, TooManyWaiters, PoolConfigError)


def pool_error(exc: BaseException | None) -> PoolError | None:
    """The pool's error behind ``exc`` (itself, or its cause or context, as Django wraps it),
    when it is one a 503 answers; else None."""
    seen = 0
    while exc is not None and seen < 8:  # bounded: a cycle of causes must not hang a request
        if isinstance(exc, _ANSWERED):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class PoolTimeoutMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        error = pool_error(exception)
        if error is None:
            return None  # not ours: Django's handling goes on
        retry_after = int(getattr(settings, "THREADPOOL_DB_RETRY_AFTER", 1))
        body: dict[str, Any]
        if isinstance(error, PoolConfigError) or getattr(error, "cause", None):
            body = {"error": "database unavailable", "detail": "no connection to the database could be made; "
                    "retry later"}  # fmt: skip
        else:
            body = {"error": "database busy", "detail": "no database connection became free in time; retry later"}
        body["retry_after"] = retry_after
        logger.warning("answered 503 to %s %s: %s", request.method, request.path, error)
        response = JsonResponse(body, status=503)
        response["Retry-After"] = str(retry_after)
        return response
