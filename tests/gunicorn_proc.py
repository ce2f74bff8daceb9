"""The demo app under a real gunicorn, for the end-to-end tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from demo_app.serve import DEMO_APP, run_gunicorn


@contextlib.contextmanager
def gunicorn(database_url: str, *extra: str, workers: int = 2, threads: int = 8, max_size: int = 4,
             stats_dir: str | None = None, env: dict[str, str] | None = None,
             app: str = DEMO_APP) -> Iterator[str]:  # fmt: skip
    env = {**(env or {}), **({"TPDB_STATS_DIR": stats_dir} if stats_dir else {})}
    with run_gunicorn(database_url, *extra, workers=workers, threads=threads, max_size=max_size, env=env,
                      app=app) as base:  # fmt: skip
        yield base
