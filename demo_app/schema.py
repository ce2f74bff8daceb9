"""Schema and seed data of the demo: an ``accounts`` table with 10,000 rows."""

from __future__ import annotations

import psycopg

from threadpool_db.pgbouncer import take_flag

ACCOUNTS = 10_000
_LOCK_KEY = 4242_0001  # advisory lock: several workers may start at once


def ensure_schema(url: str) -> None:
    """Create and fill the table once. One transaction with a transaction-scoped advisory lock:
    safe when several workers start at once, and behind PgBouncer's transaction mode."""
    with psycopg.connect(plain_url(url), application_name="tpdb-demo-setup") as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL)"
        )
        (n,) = conn.execute("SELECT count(*) FROM accounts").fetchone()  # type: ignore[misc]
        if n < ACCOUNTS:
            conn.execute(
                "INSERT INTO accounts SELECT g, 'owner-' || g, 1000000 FROM generate_series(1, %s) g "
                "ON CONFLICT (id) DO NOTHING",
                (ACCOUNTS,),
            )
            conn.execute("ANALYZE accounts")


def plain_url(url: str) -> str:
    """The DSN without threadpool_db's ``pgbouncer=true`` hint, for plain psycopg."""
    return take_flag(url)[0]
