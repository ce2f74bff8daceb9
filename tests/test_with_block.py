"""The handle as a context manager, in C (_sight.c) and in Python: a clean exit commits, an
exception rolls back, the connection goes back either way, and a handle given back inside the
block (or before it) says so. Against the real server."""

from __future__ import annotations

import psycopg
import pytest

from threadpool_db import PoolError
from threadpool_db.connection import PYTHON_WITH, PooledConnection

from .helpers import require_native


def _count(pool, table: str) -> int:
    with pool.connection() as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_clean_exit_commits_and_gives_the_connection_back(make_pool, with_methods):
    pool = make_pool(min_size=1, max_size=1, name=f"with-commit-{with_methods}")
    table = f"with_commit_{with_methods.lower()}"
    with pool.connection() as conn:
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (x int)")  # one backend: temp tables persist
    with pool.connection() as conn:
        assert pool.stats()["in_use"] == 1
        conn.execute(f"INSERT INTO {table} VALUES (1)")
    assert pool.stats()["in_use"] == 0
    assert _count(pool, table) == 1


def test_an_exception_rolls_back_and_still_gives_the_connection_back(make_pool, with_methods):
    pool = make_pool(min_size=1, max_size=1, name=f"with-rollback-{with_methods}")
    table = f"with_rollback_{with_methods.lower()}"
    with pool.connection() as conn:
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (x int)")
    with pytest.raises(ZeroDivisionError), pool.connection() as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        1 / 0  # noqa: B018
    assert pool.stats()["in_use"] == 0
    assert _count(pool, table) == 0
    assert pool.get_stats().get("returns_bad", 0) == 0  # a rollback on purpose, not a bad return


def test_a_failed_commit_raises_and_the_connection_still_goes_back(make_pool, with_methods):
    pool = make_pool(min_size=1, max_size=1, name=f"with-failed-commit-{with_methods}")
    with pool.connection() as conn:
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS parent (id int PRIMARY KEY)")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS child (pid int REFERENCES parent "
                     "DEFERRABLE INITIALLY DEFERRED)")  # fmt: skip
    with pytest.raises(psycopg.errors.ForeignKeyViolation), pool.connection() as conn:
        conn.execute("INSERT INTO child VALUES (42)")  # fails only at the commit, in __exit__
    assert pool.stats()["in_use"] == 0
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0


def test_a_handle_given_back_inside_the_block_exits_quietly_and_cannot_be_entered(make_pool, with_methods):
    pool = make_pool(min_size=1, max_size=1, name=f"with-early-{with_methods}")
    with pool.connection() as conn:
        pool.putconn(conn)
    assert pool.stats()["in_use"] == 0
    with pytest.raises(PoolError, match=f"already returned to pool 'with-early-{with_methods}'"), conn:
        pass
    assert pool.stats()["borrows"] == 1


def test_the_c_methods_refuse_what_is_not_a_handle():
    require_native()
    from threadpool_db.connection import NATIVE_WITH

    assert NATIVE_WITH is not None
    enter, leave = PooledConnection.__dict__["__enter__"], PooledConnection.__dict__["__exit__"]
    assert (enter, leave) == NATIVE_WITH and NATIVE_WITH != PYTHON_WITH
    with pytest.raises(TypeError):
        enter(object())  # the descriptor checks the type before any slot is read
    with pytest.raises(TypeError):
        leave(object(), None, None, None)


def test_the_c_exit_takes_exactly_three_arguments(make_pool):
    require_native()
    pool = make_pool(min_size=1, max_size=1, name="with-args")
    conn = pool.getconn()
    with pytest.raises(TypeError, match="3 arguments"):
        conn.__exit__(None, None)
    assert pool.stats()["in_use"] == 1  # not returned by a bad call
    conn.__exit__(None, None, None)
    assert pool.stats()["in_use"] == 0
