"""Per-upload write locks that hold across server nodes.

PostgreSQL: session-level advisory locks, all held on one dedicated connection per node. A
node that dies drops its connection and PostgreSQL releases its locks at once; one
connection serves any number of concurrent PATCHes (a connection per PATCH would run into
max_connections long before the node runs out of sockets).

SQLite: the database is a file on one machine, served by one or several processes
(`--processes`): an exclusive `flock` on a file per upload in the data folder. The kernel
drops a dead process's locks at once, as PostgreSQL does a dead session's.

A stalled writer on another node cannot be signalled in memory: the node that wants the
upload stamps `uploads.takeover_at`, and the stalled writer looks at it each time it finds
its body idle, as it already does for an in-process takeover.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database
from storage.models import Upload

log = logging.getLogger("rollscribe.upload_locks")

# The first key of the two-key advisory lock: rollscribe's uploads, apart from any other
# application's advisory locks in the same database.
UPLOAD_LOCK_CLASS = 0x7273  # "rs"


class UploadLocks(Protocol):
    async def try_lock(self, upload_id: str) -> bool: ...

    async def unlock(self, upload_id: str) -> None: ...

    def holds(self, upload_id: str) -> bool: ...

    async def request_takeover(self, upload_id: str) -> None: ...

    async def takeover_requested(self, upload_id: str, since: float, window_s: float) -> bool: ...

    async def close(self) -> None: ...


class SingleNodeLocks:
    """One process alone (the handler's in-process tests): its in-process lock is enough."""

    async def try_lock(self, upload_id: str) -> bool:
        return True

    async def unlock(self, upload_id: str) -> None:
        return None

    def holds(self, upload_id: str) -> bool:
        return True

    async def request_takeover(self, upload_id: str) -> None:
        return None

    async def takeover_requested(self, upload_id: str, since: float, window_s: float) -> bool:
        return False

    async def close(self) -> None:
        return None


class TakeoverStamps:
    """Asking a writer in another process or node to stop: a stamp on the upload's row."""

    db: Database

    async def request_takeover(self, upload_id: str) -> None:
        async with self.db.write() as session:
            await session.execute(
                update(Upload).where(Upload.id == upload_id).values(takeover_at=time.time())
            )

    async def takeover_requested(self, upload_id: str, since: float, window_s: float) -> bool:
        async with self.db.read() as session:
            at = (
                await session.execute(select(Upload.takeover_at).where(Upload.id == upload_id))
            ).scalar_one_or_none()
        # A request older than the requester's patience has been given up: ignore it.
        return at is not None and at > since and at > time.time() - window_s


class FileLocks(TakeoverStamps):
    """SQLite: one lock file per upload under `<data>/locks/`, held with `flock` by the
    process that writes it. Non-blocking, so the event loop never waits on it. The files
    are removed on unlock (a racing locker then holds a lock on an unlinked file, which is
    why a lock is only taken as held after checking the path still names the locked file)."""

    def __init__(self, db: Database, folder: Path) -> None:
        self.db = db
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, int] = {}

    def _path(self, upload_id: str) -> Path:
        return self.folder / upload_id  # ids are checked URL-safe tokens (check_upload_id)

    async def try_lock(self, upload_id: str) -> bool:
        path = self._path(upload_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # unlinked by its last holder between our open and our lock
            os.close(fd)
            return await self.try_lock(upload_id)
        self._held[upload_id] = fd
        return True

    async def unlock(self, upload_id: str) -> None:
        fd = self._held.pop(upload_id, None)
        if fd is None:
            return
        self._path(upload_id).unlink(missing_ok=True)
        os.close(fd)  # closing releases the flock

    def holds(self, upload_id: str) -> bool:
        return upload_id in self._held

    async def close(self) -> None:
        for upload_id in list(self._held):
            await self.unlock(upload_id)


class PostgresAdvisoryLocks(TakeoverStamps):
    def __init__(self, db: Database) -> None:
        self.db = db
        self._connection: AsyncConnection | None = None
        # asyncpg runs one statement at a time per connection.
        self._guard = asyncio.Lock()
        self._held: set[str] = set()

    async def _conn(self) -> AsyncConnection:
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            connection = await self.db.write_engine.connect()
            # No transaction: the locks are the session's, and an idle-in-transaction
            # connection would hold back vacuum for as long as the node runs.
            self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            # A new session holds nothing: whoever thought it held a lock must learn it.
            self._held.clear()
        return self._connection

    async def _scalar(self, sql: str, upload_id: str) -> object:
        async with self._guard:
            connection = await self._conn()
            try:
                result = await connection.execute(
                    text(sql), {"cls": UPLOAD_LOCK_CLASS, "id": upload_id}
                )
                return result.scalar()
            except DBAPIError:
                # The session (and every lock it held) is gone; the next call reconnects.
                await connection.invalidate()
                self._held.clear()
                raise

    async def try_lock(self, upload_id: str) -> bool:
        got = await self._scalar("SELECT pg_try_advisory_lock(:cls, hashtext(:id))", upload_id)
        if got:
            self._held.add(upload_id)
        return bool(got)

    async def unlock(self, upload_id: str) -> None:
        if upload_id not in self._held:
            return
        self._held.discard(upload_id)
        try:
            await self._scalar("SELECT pg_advisory_unlock(:cls, hashtext(:id))", upload_id)
        except DBAPIError:
            log.warning("upload lock connection lost; its locks went with it")

    def holds(self, upload_id: str) -> bool:
        return upload_id in self._held

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._held.clear()


def upload_locks_for(db: Database, data_dir: Path) -> UploadLocks:
    return FileLocks(db, data_dir / "locks") if db.is_sqlite else PostgresAdvisoryLocks(db)
