"""The test helpers themselves: a missing outside tool fails CI and skips elsewhere, and the
tests' own connections give up on a held lock instead of hanging."""

from __future__ import annotations

import _pytest.outcomes
import psycopg
import pytest

from .helpers import connect, require, sql


def test_require_fails_under_ci_and_skips_elsewhere_naming_the_install(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(_pytest.outcomes.Failed, match="CI needs pgbouncer is missing: apt-get install pgbouncer"):
        require("pgbouncer", False, "apt-get install pgbouncer")
    monkeypatch.delenv("CI")
    with pytest.raises(_pytest.outcomes.Skipped, match="chromium is missing: apt-get install chromium"):
        require("chromium", False, "apt-get install chromium")
    require("present", True, "nothing")  # no-op


def test_a_leaked_lock_fails_the_helpers_statement_at_once(dsn):
    sql(dsn, "CREATE TABLE IF NOT EXISTS t_lock (v int)")
    with connect(dsn) as holder:
        holder.execute("LOCK TABLE t_lock IN ACCESS EXCLUSIVE MODE")  # a transaction left open
        with pytest.raises(psycopg.errors.LockNotAvailable):
            sql(dsn, "TRUNCATE t_lock")  # before: waited out the 300 s pytest-timeout
        holder.rollback()
