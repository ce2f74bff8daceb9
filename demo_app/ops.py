"""The three operations both route families run, on any psycopg-like connection."""

from __future__ import annotations

import random
from typing import Any

from .schema import ACCOUNTS

OPS = ("read", "write", "slow")


def read(conn: Any) -> dict[str, Any]:
    """An indexed lookup of a random account."""
    row = conn.execute("SELECT id, balance FROM accounts WHERE id = %s", (random.randint(1, ACCOUNTS),)).fetchone()
    return {"id": row[0], "balance": row[1]}


def write(conn: Any) -> dict[str, Any]:
    """Move 1 unit between two random accounts in one transaction (locked in id order)."""
    a, b = random.sample(range(1, ACCOUNTS + 1), 2)
    lo, hi = sorted((a, b))
    with conn.transaction():
        conn.execute("SELECT 1 FROM accounts WHERE id IN (%s, %s) ORDER BY id FOR UPDATE", (lo, hi))
        conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (a,))
        conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (b,))
    return {"from": a, "to": b}


def slow(conn: Any) -> dict[str, Any]:
    """A query that holds its connection for about 50 ms."""
    conn.execute("SELECT pg_sleep(0.05)")
    return {"slept_ms": 50}


def run(op: str, conn: Any) -> dict[str, Any]:
    return {"read": read, "write": write, "slow": slow}[op](conn)
