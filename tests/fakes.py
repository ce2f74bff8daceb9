"""A fake DB-API connection for pure pool-logic unit tests (no database involved)."""

from __future__ import annotations

import itertools
import threading
from typing import Any

_ids = itertools.count(1)


class FakeError(Exception):
    pass


class FakeConnection:
    def __init__(self) -> None:
        self.id = next(_ids)
        self.closed = False
        self.rollbacks = 0
        self.commits = 0

    def cursor(self) -> Any:
        if self.closed:
            raise FakeError("closed")
        return _FakeCursor()

    def execute(self, q: str) -> Any:
        if self.closed:
            raise FakeError("closed")
        return _FakeCursor()

    def rollback(self) -> None:
        if self.closed:
            raise FakeError("closed")
        self.rollbacks += 1

    def commit(self) -> None:
        self.commits += 1

    def close(self) -> None:
        self.closed = True


class _FakeCursor:
    def execute(self, q: str) -> None:
        pass

    def fetchall(self) -> list[Any]:
        return [(1,)]

    def close(self) -> None:
        pass


class Factory:
    """Makes FakeConnections; can be told to fail the next n connects."""

    def __init__(self) -> None:
        self.made: list[FakeConnection] = []
        self.fail_next = 0
        self.lock = threading.Lock()

    def __call__(self) -> FakeConnection:
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                raise FakeError("connect refused (fake)")
            c = FakeConnection()
            self.made.append(c)
            return c
