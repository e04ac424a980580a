"""aiosqlite connections that stop hopping threads while they hold SQLite's write lock.

aiosqlite runs every call on the connection's own thread and hands the result back to the
event loop, so each statement costs several trips through the loop (cursor, execute, fetch,
close). A write transaction pays them while it holds SQLite's one write lock: under load the
loop is busy with other requests, every trip waits its turn, and the lock stays held for
that whole time. Under 200 uploading clients a write transaction held the lock about
15 ms, of which about 5 ms were its own statements (the rest trips to the thread and back,
and BEGIN and COMMIT): every upload of a process queued behind that (`bench/README.md`,
"small uploads").

Once BEGIN IMMEDIATE has returned, this process holds the write lock and no other connection
can make a statement wait, so the statements of the transaction run inline on the loop's
thread: a short index lookup or row write costs microseconds there. What can wait long
still goes to the thread: COMMIT (the WAL's fsync, and a checkpoint now and then),
connecting and closing, and BEGIN IMMEDIATE when another connection holds the lock (it is
tried once on the loop's thread without waiting first: `begin_immediate`).

Readers in WAL mode never wait for a writer, so a connection made `inline` runs all its
calls on the loop: the database's point reads (an upload by id, a key's bytes today) use
those, while other readers, which can run long scans, keep the thread.

This is a small subclass rather than a driver of our own: aiosqlite stays what talks to
sqlite3, SQLAlchemy's aiosqlite dialect stays what talks to aiosqlite (through its
`async_creator` hook), and only where a call runs changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiosqlite


class SqliteConnection(aiosqlite.Connection):
    def __init__(self, connector: Callable[[], sqlite3.Connection], inline: bool) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self.inline = inline
        # Like SQLAlchemy's own aiosqlite connect: a connection never keeps the process alive.
        self._thread.daemon = True
        # Set once BEGIN IMMEDIATE has returned; cleared by COMMIT and ROLLBACK.
        self.holds_write_lock = False

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.holds_write_lock or (self.inline and self._connection is not None):
            # Every call of this connection is awaited before the next is made, so the
            # connection's thread is idle now: sqlite3 is never used from two threads at once.
            return fn(*args, **kwargs)
        return await super()._execute(fn, *args, **kwargs)

    async def begin_immediate(self, busy_timeout_ms: int) -> None:
        """BEGIN IMMEDIATE: tried first on the loop's thread without waiting, and only if
        another connection holds the write lock, on the connection's thread with the busy
        timeout. Within one server the writer queue (storage/writer_queue.py) has let only
        this connection begin, so the first try almost always takes the lock: three
        statements of microseconds instead of three trips to the thread (0.3 ms of each
        write transaction, measured: `bench/README.md`, "Upload throughput")."""
        raw = self._connection
        assert raw is not None, "the connection is open"
        taken = False
        raw.execute("PRAGMA busy_timeout=0")
        try:
            raw.execute("BEGIN IMMEDIATE")
            taken = True
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        finally:
            raw.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if not taken:
            await super()._execute(raw.execute, "BEGIN IMMEDIATE")
        self.holds_write_lock = True

    async def commit(self) -> None:
        self.holds_write_lock = False
        await super().commit()

    async def rollback(self) -> None:
        self.holds_write_lock = False
        if self._connection is not None and not self._connection.in_transaction:
            # Nothing to undo (the pool resets every connection it takes back): no trip.
            return
        await super().rollback()


def connector(
    path: Path | str, timeout_s: float, inline: bool = False
) -> Callable[[], Coroutine[Any, Any, SqliteConnection]]:
    """For `create_async_engine(async_creator=...)`."""

    async def connect() -> SqliteConnection:
        # check_same_thread: the connection is made on aiosqlite's thread and used inline on
        # the loop's while the write lock is held (never from both at once, see above).
        return await SqliteConnection(
            lambda: sqlite3.connect(str(path), timeout=timeout_s, check_same_thread=False),
            inline,
        )

    return connect
