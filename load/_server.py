"""The database the load tools use: DATABASE_URL, or an embedded PostgreSQL they start."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from threadpool_db.testing import EmbeddedPostgres, database_url


@contextlib.contextmanager
def database(settings: dict[str, Any] | None = None) -> Iterator[tuple[str, EmbeddedPostgres | None]]:
    """Yield (url, embedded server or None); the embedded server is stopped on exit."""
    url = database_url()
    if url:
        yield url, None
        return
    with EmbeddedPostgres(settings or {}) as pg:
        yield pg.url(), pg
