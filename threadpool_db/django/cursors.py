"""The cursor wrappers this backend hands to Django code (``connection.cursor()``, the ORM).

Django's own, with one change to ``close()``: a cursor that is already closed is left alone.
The pool closes Django's server-side cursors when the connection goes back (base.py), and
Django may close one again later, from a ``QuerySet.iterator()`` generator that outlived the
request: psycopg's ``close()`` then reaches for the connection that went back, and raises
inside a garbage collection. Closing a closed cursor is a no-op, as in psycopg itself.

``close()`` also tells the wrapper (``cursor_closed``), which gives the connection back after
the query when ``OPTIONS["release_after_query"]`` is on (base.py).
"""

from __future__ import annotations

from typing import Any

from django.db.backends import utils
from django.db.backends.postgresql import base as pg_base


class _Closing:
    cursor: Any
    db: Any

    def close(self) -> None:
        if not self.cursor.closed:
            with self.db.wrap_database_errors:
                self.cursor.close()
        self.db.cursor_closed(self)


class CursorWrapper(_Closing, utils.CursorWrapper):
    pass


class CursorDebugWrapper(_Closing, pg_base.CursorDebugWrapper):  # with DEBUG: logs the queries too
    pass
