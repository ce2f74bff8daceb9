"""Schema and seed data of the demo: an ``accounts`` table with 10,000 rows."""

from __future__ import annotations

import psycopg

ACCOUNTS = 10_000
_LOCK_KEY = 4242_0001  # advisory lock: several workers may start at once


def ensure_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True, application_name="tpdb-demo-setup") as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS accounts ("
                " id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL)"
            )
            (n,) = conn.execute("SELECT count(*) FROM accounts").fetchone()  # type: ignore[misc]
            if n < ACCOUNTS:
                conn.execute(
                    "INSERT INTO accounts SELECT g, 'owner-' || g, 1000000 FROM generate_series(1, %s) g "
                    "ON CONFLICT (id) DO NOTHING",
                    (ACCOUNTS,),
                )
                conn.execute("ANALYZE accounts")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
