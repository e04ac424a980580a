"""Whether a failure means the database cannot serve for now, rather than a fault.

A request that finds the database down, restarting, out of connections, or its pool taken for
as long as the pool waits, did nothing wrong, and nothing it sent was accepted: its client
should try again shortly (503 with Retry-After), as tus clients do on a 5xx, not be told the
server is broken (500). Everything else stays a fault.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# PostgreSQL's SQLSTATEs that mean "not now": class 08 (connection exception: the connection
# failed or was lost), class 53 (insufficient resources: too many connections, out of memory
# or disk), and the server shutting down or starting up (57P01-57P03).
_UNAVAILABLE_CLASSES = ("08", "53")
_UNAVAILABLE_STATES = {"57P01", "57P02", "57P03"}
# SQLite's primary result codes for a lock held past the busy timeout.
_SQLITE_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class DatabaseUnreachable(ConnectionError):
    """A new connection to the database could not be opened (refused, reset, timed out).

    The driver raises the socket's own error there (asyncpg: `ConnectionRefusedError`), which
    says nothing of where it came from; opening connections raises this instead
    (`storage.database`), so that an unreachable database is told apart from any other
    `OSError`."""


def sqlite_primary_code(error: BaseException) -> int | None:
    """SQLite's primary result code of a driver error (Python 3.11's `sqlite_errorcode` is the
    extended code, whose low byte is the primary), or None for any other error."""
    if isinstance(error, DBAPIError):
        error = error.orig  # type: ignore[assignment]
    code = getattr(error, "sqlite_errorcode", None) if isinstance(error, sqlite3.Error) else None
    return None if code is None else code & 0xFF


def database_unavailable(error: BaseException) -> bool:
    if isinstance(error, DatabaseUnreachable | PoolTimeout):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:  # the connection was lost in the middle of a statement
        return True
    original = error.orig
    if isinstance(original, sqlite3.Error):
        return sqlite_primary_code(original) in _SQLITE_BUSY_CODES
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if not isinstance(state, str):
        return False
    return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES
