"""What a pool shows is its API: ``dir(pool)`` lists exactly the names docs/api.md's table
"Everything a pool shows" lists. A seam a service needs (the housekeeper's, the leak
watchdog's, the creators', the futures') stays private, so it cannot pass for API."""

from __future__ import annotations

import re
from pathlib import Path

from threadpool_db import ConnectionPool, NullConnectionPool

API = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _documented() -> set[str]:
    text = API.read_text()
    section = text.split("## Everything a pool shows", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            names.update(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", first_cell))
    return names


def _public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_a_pool_shows_exactly_what_the_api_page_lists():
    pool = ConnectionPool("dbname=none", open=False, name="surface")
    documented = _documented()
    assert documented, "the table was not found in docs/api.md"
    shown = _public(pool)
    assert shown - documented == set(), f"public on the pool but not in docs/api.md: {sorted(shown - documented)}"
    assert documented - shown == set(), f"in docs/api.md but not on the pool: {sorted(documented - shown)}"


def test_a_null_pool_shows_the_same_names():
    pool = NullConnectionPool("dbname=none", open=False, name="surface-null")
    assert _public(pool) == _public(ConnectionPool("dbname=none", open=False, name="surface-2"))


def test_the_services_seams_are_private():
    """The sixteen methods the services call were public once and read as API."""
    shown = _public(ConnectionPool("dbname=none", open=False, name="surface-3"))
    seams = {"admit", "hand_out", "cancel_waiter", "expire_waiter", "attempting", "attempt_failed",
             "add_connection", "stopped_growing", "leased", "mark_reported", "reclaim", "view", "evict",
             "set_ceiling", "now"}  # fmt: skip
    assert shown & seams == set()
