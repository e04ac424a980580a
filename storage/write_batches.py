"""Group commit for SQLite: write transactions that queue up behind each other share one
SQLite transaction, each in a savepoint of its own, and one COMMIT.

SQLite has one writer at a time, so a process's write transactions take turns. Alone, each
turn pays for BEGIN IMMEDIATE and COMMIT on the connection's thread (two trips through a
busy event loop, and the WAL's fsync) besides its own statements; measured under 200
uploading clients that overhead was about 60 % of every turn. Here the turns that are
already waiting when one ends join its transaction: BEGIN, COMMIT and the fsync are paid
once for all of them (`bench/README.md`, "small uploads").

What each caller keeps:
- Its own write transaction (`storage/write_transaction.py`: its `info`, its ORM session if
  it needs one) in a savepoint of its own on the shared connection: if its block raises,
  only its savepoint is rolled back and only it sees the error, once the batch's COMMIT is
  done (the error may have been decided on rows earlier members wrote: a POST told "that
  chunk exists, answer with its upload" must find that upload when it reads it; a
  cancelled member leaves at once).

The members' savepoints are plain SQL sent to sqlite3 itself (`prepared_statements.run_plain`,
inline: the batch holds the write lock), not SQLAlchemy's nested transactions: `begin_nested`
and its commit cost a greenlet switch each, a transaction object and a statement through
SQLAlchemy's execution, two per member, where SQLite spends microseconds; under 200 uploading
clients they were about a tenth of the server's GIL-holding time once the upload path's own
statements ran on sqlite3 (`bench/README.md`, "Many small uploads"). SQLAlchemy's connection
stays in the batch's one transaction throughout; an ORM session a member opens takes its
own savepoint inside the member's, through SQLAlchemy, and is closed before the member's
savepoint is released or rolled back to.
- Durability: a caller whose block succeeded returns only after the shared COMMIT; if the
  COMMIT fails, every member of the batch gets the error and none of their changes stay.
- Order: turns are first come, first served, and a batch is committed before the next one
  begins. Between processes that share the database, batches take turns through a
  `WriterQueue` (`storage/writer_queue.py`), taken before BEGIN IMMEDIATE and given back
  after the COMMIT.

A batch is committed by a task of its own, queued for a turn when the batch's first member
ends. So it holds the members that were already waiting then (at most `max_members`), and
a member whose request is cancelled cannot leave a batch open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.prepared_statements import inline_sqlite, run_plain
from storage.write_transaction import WriteTransaction, write_transaction_on
from storage.writer_queue import WriterQueue

# Bounds how long a batch's first member waits for the others' statements.
MAX_MEMBERS = 32


class _Batch:
    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        sqlite = inline_sqlite(connection)
        assert sqlite is not None, "a batch is a SQLite transaction holding the write lock"
        self.sqlite = sqlite
        self.savepoints = 0
        self.members = 0
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A batch whose members all failed has nobody awaiting its result: mark it read, so
        # an error there is not reported again as "never retrieved".
        self.committed.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.flusher: asyncio.Task[None] | None = None


class WriteBatches:
    def __init__(
        self,
        engine: AsyncEngine,
        max_members: int = MAX_MEMBERS,
        queue: WriterQueue | None = None,
    ) -> None:
        self._engine = engine
        self._queue = queue  # None: no other process writes (an in-memory database)
        self.max_members = max_members
        self._turn = asyncio.Lock()
        self._open: _Batch | None = None
        # The COMMIT in progress: the next batch begins only after it (SQLite would make
        # the next BEGIN IMMEDIATE wait for it anyway, on a thread, in its busy handler).
        self._committing: asyncio.Task[None] | None = None
        # The connection batches run on, kept between them: checking one out of the pool and
        # back for each batch cost 0.12 ms of every write transaction (`bench/README.md`,
        # "Upload throughput"). Batches never overlap, so one is enough; dropped (and a new
        # one taken at the next batch) after a batch that failed, whatever state it is in.
        self._connection: AsyncConnection | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[WriteTransaction]:
        """A write transaction: durable when the block ends, rolled back if it raises."""
        async with self._turn:
            batch = await self._join()
            batch.savepoints += 1
            savepoint = f"member_{batch.savepoints}"
            try:
                run_plain(batch.sqlite, f"SAVEPOINT {savepoint}")
            except BaseException:
                self._abort(batch)
                raise
            try:
                async with write_transaction_on(batch.connection) as transaction:
                    yield transaction
            except Exception as error:
                # Only this member's savepoint is rolled back: the batch goes on.
                await self._after_member(batch, savepoint, failed=True)
                failed: Exception | None = error
            except BaseException:  # cancelled: it leaves at once
                await self._after_member(batch, savepoint, failed=True)
                raise
            else:
                await self._after_member(batch, savepoint, failed=False)
                failed = None
        if failed is not None:
            # Its error may have been decided on what earlier members of the batch wrote (a
            # chunk's key found taken: "answer with that upload"), which nobody else can
            # read before the COMMIT: it is raised once that is done, as their success is
            # (outside the turn, which the COMMIT needs). A failed COMMIT changes nothing for
            # it: its own writes were rolled back already.
            with contextlib.suppress(Exception):
                await asyncio.shield(batch.committed)
            raise failed
        await asyncio.shield(batch.committed)

    async def _join(self) -> _Batch:
        if self._committing is not None:
            await asyncio.shield(self._committing)  # never raises: see _commit
            self._committing = None
        if self._open is None:
            if self._queue is not None:
                await self._queue.acquire()
            try:
                connection, self._connection = self._connection, None
                if connection is None:
                    connection = await self._engine.connect()
                try:
                    await connection.begin()  # BEGIN IMMEDIATE: storage/database.py
                    self._open = _Batch(connection)
                except BaseException:
                    await connection.close()
                    raise
            except BaseException:
                if self._queue is not None:
                    self._queue.release()
                raise
        return self._open

    async def _after_member(self, batch: _Batch, savepoint: str, failed: bool) -> None:
        try:
            if failed:
                run_plain(batch.sqlite, f"ROLLBACK TO SAVEPOINT {savepoint}")
            run_plain(batch.sqlite, f"RELEASE SAVEPOINT {savepoint}")
        except BaseException:
            # The savepoint could not be released or rolled back: nothing more can be
            # trusted on this connection. Every member is failed; none of it is kept.
            self._abort(batch)
            raise
        batch.members += 1
        if batch.members >= self.max_members:
            await self._finish(batch)
        elif batch.flusher is None:
            batch.flusher = asyncio.create_task(self._flush(batch))

    def _abort(self, batch: _Batch) -> None:
        self._end(batch)
        self._committing = asyncio.create_task(self._commit(batch, abort=True))

    async def _flush(self, batch: _Batch) -> None:
        async with self._turn:
            if self._open is batch:
                await self._finish(batch)

    async def _finish(self, batch: _Batch) -> None:
        """Under the turn: commit the batch. A caller cancelled meanwhile does not stop it."""
        self._end(batch)
        self._committing = asyncio.create_task(self._commit(batch, abort=False))
        await asyncio.shield(self._committing)

    def _end(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None

    async def _commit(self, batch: _Batch, abort: bool) -> None:
        connection = batch.connection
        kept = False
        try:
            if abort:
                raise RuntimeError("a savepoint of the batch failed; the batch is rolled back")
            await connection.commit()
        except BaseException as exc:  # reported to every member through the future
            with contextlib.suppress(Exception):
                await connection.rollback()
            if not batch.committed.done():
                batch.committed.set_exception(exc)
        else:
            batch.committed.set_result(None)
            self._connection, kept = connection, True  # for the next batch
        finally:
            try:
                if not kept:
                    with contextlib.suppress(Exception):
                        await connection.close()
            finally:
                if self._queue is not None:
                    self._queue.release()  # after the COMMIT or ROLLBACK: the next may begin

    async def close(self) -> None:
        """Commit what is open (a server shutting down)."""
        async with self._turn:
            if self._open is not None:
                await self._finish(self._open)
            if self._committing is not None:
                await asyncio.shield(self._committing)
                self._committing = None
            if self._connection is not None:
                connection, self._connection = self._connection, None
                with contextlib.suppress(Exception):
                    await connection.close()
            if self._queue is not None:
                self._queue.close()
