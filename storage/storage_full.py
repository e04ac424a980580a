"""Whether a failure means the server's own storage is full, rather than a fault.

A disk (or a quota) that is full refuses what a request would have written; nothing is
wrong with the request, and it may succeed once space is made: 507 Insufficient Storage
with Retry-After, not 500. The folder blob store's writes meet it as ENOSPC or EDQUOT,
SQLite as SQLITE_FULL ("database or disk is full"). PostgreSQL's own disk full (SQLSTATE
53100) is the database unable to serve (`storage/database_outage.py`).
"""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy.exc import DBAPIError

from storage.database_outage import sqlite_primary_code

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def storage_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in _FULL_ERRNOS
    return isinstance(error, DBAPIError) and sqlite_primary_code(error) == sqlite3.SQLITE_FULL
