"""Per-upload write locks that hold across server nodes.

PostgreSQL: session-level advisory locks, all held on one dedicated connection per node. A
node that dies drops its connection and PostgreSQL releases its locks at once; one
connection serves any number of concurrent PATCHes (a connection per PATCH would run into
max_connections long before the node runs out of sockets).

SQLite: the database is a file on one machine, served by one or several processes
(`--processes`): an exclusive lock on the upload's byte of one lock file in the data folder.
The kernel drops a dead process's locks at once, as PostgreSQL does a dead session's.

A stalled writer on another node cannot be signalled in memory: the node that wants the
upload stamps `uploads.takeover_at`, and the stalled writer looks at it each time it finds
its body idle, as it already does for an in-process takeover.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import struct
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database
from storage.kept_connections import connection_closed_by_server
from storage.models import Upload
from storage.prepared_statements import PreparedStatement, fetch_first

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
    """SQLite: one byte per upload of one lock file, `<data>/locks/uploads`, locked by the
    process that writes the upload with an open file description lock (Linux's
    `F_OFD_SETLK`). Non-blocking, so the event loop never waits on it.

    It was a lock file per upload, created and unlinked by every PATCH. Under many small
    uploads ext4's search for a free inode past the recently deleted ones
    (`recently_deleted`, `find_inode_bit`) took about a fifth of the server's CPU
    (`perf`, `bench/README.md`). One file that stays is created once.

    Open file description locks, not `fcntl.lockf`: a POSIX record lock belongs to the
    process, so two holders in one process (two nodes of a test) would not exclude each
    other, and closing any descriptor of the file would drop every lock. An OFD lock
    belongs to this object's open of the file and goes when that is closed, or when the
    process dies, as the `flock` did. The standard library offers no call for it (its
    `lockf` takes process locks), so the `struct flock` is packed here.

    An upload's byte is at a 62-bit hash of its id: two uploads share a byte with odds of
    about n^2 / 2^63. Across processes one then waits for the other as if it were the same
    upload (a delay, nothing lost); within one process the two share the byte, and each
    upload is still guarded by the handler's in-process lock."""

    def __init__(self, db: Database, folder: Path) -> None:
        self.db = db
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "uploads"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held: set[str] = set()

    def _set(self, upload_id: str, lock_type: int) -> None:
        request = _FLOCK.pack(lock_type, os.SEEK_SET, lock_offset(upload_id), 1, 0)
        fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, request)

    async def try_lock(self, upload_id: str) -> bool:
        try:
            self._set(upload_id, fcntl.F_WRLCK)
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held elsewhere
            return False
        self._held.add(upload_id)
        return True

    async def unlock(self, upload_id: str) -> None:
        if upload_id not in self._held:
            return
        self._held.discard(upload_id)
        self._set(upload_id, fcntl.F_UNLCK)

    def holds(self, upload_id: str) -> bool:
        return upload_id in self._held

    async def close(self) -> None:
        self._held.clear()
        if self._fd >= 0:
            os.close(self._fd)  # releases every lock of this open
            self._fd = -1


# struct flock on 64-bit Linux: l_type, l_whence (shorts), l_start, l_len (off_t), l_pid
# (0 for an OFD lock), padded to 32 bytes.
_FLOCK = struct.Struct("@hhqqi4x")


def lock_offset(upload_id: str) -> int:
    """The byte of the lock file that stands for an upload."""
    digest = hashlib.blake2b(upload_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


_TRY_LOCK = PreparedStatement(text("SELECT pg_try_advisory_lock(:cls, hashtext(:id)) AS done"))
_UNLOCK = PreparedStatement(text("SELECT pg_advisory_unlock(:cls, hashtext(:id)) AS done"))


class PostgresAdvisoryLocks(TakeoverStamps):
    def __init__(self, db: Database) -> None:
        self.db = db
        self._connection: AsyncConnection | None = None
        # asyncpg runs one statement at a time per connection.
        self._guard = asyncio.Lock()
        # Abandoned lock requests and their give-backs, referenced until done (the event
        # loop keeps only weak references to tasks).
        self._giving_back: set[asyncio.Future[Any]] = set()
        # How many times the session holds each upload's lock: PostgreSQL's session locks
        # stack (a second pg_try_advisory_lock by the same session succeeds and needs its own
        # unlock), and a lock given back after an abandoned request may overlap the next
        # request's (try_lock).
        self._held: Counter[str] = Counter()

    async def _conn(self) -> AsyncConnection:
        current = self._connection
        if current is not None and not current.closed and not current.invalidated:
            if not connection_closed_by_server(current):
                return current
            # The server ended the session (a restart): its locks went with it.
            await current.invalidate()
        connection = await self.db.write_engine.connect()
        # No transaction: the locks are the session's, and an idle-in-transaction
        # connection would hold back vacuum for as long as the node runs.
        self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        # A new session holds nothing: whoever thought it held a lock must learn it.
        self._held.clear()
        return self._connection

    async def _scalar(self, prepared: PreparedStatement, upload_id: str) -> object:
        async with self._guard:
            connection = await self._conn()
            try:
                # Every PATCH takes and gives back its lock here, one at a time on this one
                # connection: on the driver path (storage/prepared_statements.py).
                row = await fetch_first(
                    connection, prepared, {"cls": UPLOAD_LOCK_CLASS, "id": upload_id}
                )
                return None if row is None else row["done"]
            except DBAPIError:
                # The session (and every lock it held) is gone; the next call reconnects.
                await connection.invalidate()
                self._held.clear()
                raise

    async def try_lock(self, upload_id: str) -> bool:
        # Shielded: once the statement is sent PostgreSQL may grant the lock whether or not
        # its caller still waits. A request cancelled meanwhile (its client gone, the server
        # stopping) would leave the lock with this node's session, unknown to it: no other
        # node could write the upload again until this one restarted.
        taking = asyncio.ensure_future(self._take(upload_id))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            self._giving_back.add(taking)
            taking.add_done_callback(self._giving_back.discard)
            taking.add_done_callback(partial(self._give_back_abandoned, upload_id))
            raise

    async def _take(self, upload_id: str) -> bool:
        got = await self._scalar(_TRY_LOCK, upload_id)
        if got:
            self._held[upload_id] += 1
        return bool(got)

    def _give_back_abandoned(self, upload_id: str, taking: asyncio.Future[bool]) -> None:
        if not taking.cancelled() and taking.exception() is None and taking.result():
            release = asyncio.ensure_future(self.unlock(upload_id))
            self._giving_back.add(release)
            release.add_done_callback(self._giving_back.discard)

    async def unlock(self, upload_id: str) -> None:
        if not self._held[upload_id]:
            return
        self._held[upload_id] -= 1
        if not self._held[upload_id]:
            del self._held[upload_id]
        try:
            await self._scalar(_UNLOCK, upload_id)
        except DBAPIError:
            log.warning("upload lock connection lost; its locks went with it")

    def holds(self, upload_id: str) -> bool:
        return self._held[upload_id] > 0

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._held.clear()


def upload_locks_for(db: Database, data_dir: Path) -> UploadLocks:
    return FileLocks(db, data_dir / "locks") if db.is_sqlite else PostgresAdvisoryLocks(db)
