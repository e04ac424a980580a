"""Processes that share a SQLite database queue for its write lock in the kernel.

SQLite has one writer at a time, and a connection that finds the write lock taken waits in
SQLite's busy handler, which sleeps and tries again (1, 2, 5, 10, 15, 20, 25 ... 100 ms): it
is not woken when the lock is given back. A process's write transactions already take turns
among themselves (`storage/write_batches.py`); between processes (`--processes N`, the
transcription workers) the handler's sleeps were the queue. Under 200 uploading clients and
two server processes each turn lasted a few milliseconds, so a waiting process slept past
the moment the lock was free while the process that held it, its next batch ready, took it
again at once: one process's requests waited in bursts (p99 677-834 ms against about
450 for one process; `bench/README.md`, "Many small uploads").

Here each process takes an exclusive `flock` on a file beside the database before BEGIN
IMMEDIATE and gives it back after COMMIT or ROLLBACK: a process that finds it taken blocks
in the kernel (on a thread of its own, never the event loop's) and is woken when it is given
back. SQLite's own lock stays the lock that keeps the data safe; this one only decides who
asks for it next, so a writer that does not take it (a tool on the database, an older
server) still only waits in SQLite's busy handler as before. Hand-written because neither
SQLite nor aiosqlite has a lock that wakes its waiters (`sqlite3_unlock_notify` is for
shared-cache connections in one process), and the standard library's `fcntl.flock` is the
whole of it.

A waiting caller that is cancelled gives the lock back as soon as its thread gets it, so a
cancelled request (or a server shutting down) never leaves the others waiting.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import threading
from pathlib import Path

_Wait = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class WriterQueue:
    """An exclusive lock across processes on `<database>-writer.lock`. One holder at a time
    in a process as well: `acquire` is awaited by one caller at a time (the write batches'
    turn), each `acquire` followed by one `release`."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + "-writer.lock")
        # A lock is held by an open file: every WriterQueue opens its own, so two servers in
        # one process (tests) queue as two processes would. Opened by the first `acquire`,
        # as SQLite opens the database at the first statement (its folder may not exist yet
        # when the Database is made).
        self._fd: int | None = None
        # A thread of its own waits (started at the first wait): a waiting flock never takes
        # a thread the blob store's file calls need (the default executor's), and, a daemon,
        # it never holds up the process's exit (an executor's thread is joined at exit, and
        # could wait for another process as long as that one held the lock).
        self._waits: queue.SimpleQueue[_Wait | None] | None = None
        # How many acquisitions found the lock taken and waited (for tests and benchmarks).
        self.waits = 0

    async def acquire(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # Free (always so with one process): taken without leaving the loop.
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        self.waits += 1
        if self._waits is None:
            self._waits = queue.SimpleQueue()
            # The thread keeps a file of its own on the same lock (a duplicate shares it),
            # closed when the thread ends: closing the queue's never pulls a file out from
            # under a wait in progress.
            threading.Thread(
                target=_wait_in_turn,
                args=(os.dup(self._fd), self._waits),
                daemon=True,
                name="sqlite-writer-queue",
            ).start()
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[None] = loop.create_future()
        self._waits.put((loop, taken))
        try:
            await asyncio.shield(taken)
        except asyncio.CancelledError:
            # The thread still waits; whenever it gets the lock, it is given back.
            taken.add_done_callback(self._release_if_taken)
            raise

    def _release_if_taken(self, taken: asyncio.Future[None]) -> None:
        if self._fd is not None and not taken.cancelled() and taken.exception() is None:
            self.release()

    def release(self) -> None:
        assert self._fd is not None, "released before acquired"
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        # Closing the file gives back a lock still held (a shutdown that raced a batch); a
        # wait in progress ends when its flock returns (the file is closed for good then).
        if self._waits is not None:
            self._waits.put(None)
            self._waits = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _wait_in_turn(fd: int, waits: queue.SimpleQueue[_Wait | None]) -> None:
    try:
        while (wait := waits.get()) is not None:
            loop, taken = wait
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as error:
                failed: OSError | None = error
            else:
                failed = None
            try:
                loop.call_soon_threadsafe(_settle, taken, failed)
            except RuntimeError:  # the loop is gone: nobody but this thread gives it back
                if failed is None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _settle(taken: asyncio.Future[None], failed: OSError | None) -> None:
    if taken.done():
        return
    if failed is None:
        taken.set_result(None)
    else:
        taken.set_exception(failed)
