"""COMMIT, telling a commit lost in flight apart from one that certainly did not happen.

When the connection dies after COMMIT was sent and before the answer came back, the server
may have committed or not: the application must not assume either (retrying may write twice,
giving up may lose a write the user was told about). That case raises
``errors.CommitOutcomeUnknown``; every other failure raises the driver's own error, whose
outcome is known: a connection already broken before COMMIT (nothing was sent), or an error
the server answered with (a deferred constraint, a serialization failure: rolled back).
"""

from __future__ import annotations

from typing import Any

from psycopg import OperationalError

from .drivers import INTRANS, is_fatal_sqlstate
from .errors import CommitOutcomeUnknown

_OK = 0  # libpq's CONNECTION_OK


def commit(raw: Any) -> None:
    """``raw.commit()``; a psycopg connection lost while its COMMIT was in flight raises
    CommitOutcomeUnknown (the driver's error chained). Other connections commit as they do."""
    pgconn = getattr(raw, "pgconn", None)
    if pgconn is None:  # not psycopg: its driver alone knows what happened
        raw.commit()
        return
    sent = will_send(pgconn)
    try:
        raw.commit()
    except OperationalError as e:
        if sent:
            unknown_if_lost(e, pgconn)
        raise


def will_send(pgconn: Any) -> bool:
    """Will a COMMIT go out now? Only from an open, healthy transaction (a failed one rolls
    back whatever happens; no transaction, or a broken connection, sends nothing)."""
    return bool(pgconn.status == _OK and pgconn.transaction_status == INTRANS)


def unknown_if_lost(exc: OperationalError, pgconn: Any) -> None:
    """After a COMMIT that went out failed with ``exc``: raise CommitOutcomeUnknown (``exc``
    chained) if the link lost it, else return (the caller re-raises ``exc``: the server's
    answer, whose outcome is known)."""
    if _lost(exc, pgconn):
        raise CommitOutcomeUnknown(
            "the connection was lost while COMMIT was in flight: the transaction may or may not have been "
            f"committed (check before retrying): {type(exc).__name__}: {str(exc).strip()}"
        ) from exc


def _lost(exc: OperationalError, pgconn: Any) -> bool:
    """The error is the link's (no answer from the server, or a FATAL shutdown), not an
    answer to the COMMIT, and the connection is gone with it."""
    state = getattr(exc, "sqlstate", None)
    return (state is None or is_fatal_sqlstate(exc)) and pgconn.status != _OK
