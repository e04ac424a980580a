"""Processes that share a SQLite database queue for its write lock in the kernel
(storage/writer_queue.py): a waiter is woken when the lock is given back, a cancelled or
closed one never keeps it, another process holding it makes a writer wait, and two
databases on one file write through it without SQLite's busy handler."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.database import Database
from storage.writer_queue import WriterQueue

_HOLD_IN_CHILD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # held until the parent writes a line (or closes the pipe)
"""


async def _taken_within(queue: WriterQueue, seconds: float) -> bool:
    try:
        await asyncio.wait_for(queue.acquire(), seconds)
    except TimeoutError:
        return False
    return True


def test_a_free_lock_is_taken_without_waiting(tmp_path: Path) -> None:
    async def main() -> None:
        queue = WriterQueue(tmp_path / "db.sqlite")
        for _ in range(3):
            await queue.acquire()
            queue.release()
        assert queue.waits == 0
        assert queue.path == tmp_path / "db.sqlite-writer.lock"
        queue.close()

    asyncio.run(main())


def test_a_waiter_is_woken_when_the_lock_is_given_back(tmp_path: Path) -> None:
    async def main() -> None:
        first, second = WriterQueue(tmp_path / "db"), WriterQueue(tmp_path / "db")
        await first.acquire()
        waiting = asyncio.create_task(second.acquire())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the lock is held: the second waits
        assert second.waits == 1
        given_back = time.monotonic()
        first.release()
        await asyncio.wait_for(waiting, 5)
        # Woken when it is given back (a wake-up takes about a millisecond; the bound leaves
        # room for a loaded machine), where SQLite's busy handler sleeps up to 100 ms a try.
        assert time.monotonic() - given_back < 0.25
        assert not await _taken_within(first, 0.2)  # the second holds it now
        second.release()
        assert await _taken_within(first, 1)
        first.release()
        first.close()
        second.close()

    asyncio.run(main())


def test_a_cancelled_waiter_gives_the_lock_back_once_it_gets_it(tmp_path: Path) -> None:
    async def main() -> None:
        first, second = WriterQueue(tmp_path / "db"), WriterQueue(tmp_path / "db")
        await first.acquire()
        waiting = asyncio.create_task(second.acquire())
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        first.release()  # the cancelled waiter's thread takes it, then gives it back
        assert await _taken_within(first, 2)
        first.release()
        first.close()
        second.close()

    asyncio.run(main())


def test_closing_gives_back_a_lock_held(tmp_path: Path) -> None:
    async def main() -> None:
        first, second = WriterQueue(tmp_path / "db"), WriterQueue(tmp_path / "db")
        await first.acquire()
        first.close()
        assert await _taken_within(second, 1)
        second.release()
        second.close()

    asyncio.run(main())


def test_another_process_holding_the_lock_makes_a_writer_wait(tmp_path: Path) -> None:
    database = tmp_path / "db"
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_IN_CHILD, str(tmp_path / "db-writer.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "held"

        async def main() -> None:
            queue = WriterQueue(database)
            assert not await _taken_within(queue, 0.3)
            waiting = asyncio.create_task(queue.acquire())
            await asyncio.sleep(0.1)
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            await asyncio.wait_for(waiting, 5)  # the child exited: its lock went with it
            queue.release()
            queue.close()

        asyncio.run(main())
    finally:
        child.kill()
        child.wait()


def test_two_databases_on_one_file_take_turns_through_the_queue(tmp_path: Path) -> None:
    """Two Database objects on one file (as two processes): while one holds a write
    transaction open the other's writer waits in the queue, not in SQLite's busy handler,
    and goes on as soon as the first commits; every row of both is kept."""
    url = f"sqlite+aiosqlite:///{(tmp_path / 'shared.db').resolve()}"

    async def main() -> None:
        first, second = Database(url), Database(url)
        async with first.write_engine.begin() as connection:
            await connection.execute(text("CREATE TABLE row (id INTEGER PRIMARY KEY)"))
        holding, go_on = asyncio.Event(), asyncio.Event()

        async def slow_writer() -> None:
            async with first.write() as transaction:
                await transaction.execute(text("INSERT INTO row (id) VALUES (1)"))
                holding.set()
                await go_on.wait()

        async def other_writer() -> float:
            async with second.write() as transaction:
                await transaction.execute(text("INSERT INTO row (id) VALUES (2)"))
            return time.monotonic()

        slow = asyncio.create_task(slow_writer())
        await holding.wait()
        other = asyncio.create_task(other_writer())
        await asyncio.sleep(0.3)
        assert not other.done()
        assert second._batches is not None and second._batches._queue is not None
        assert second._batches._queue.waits == 1  # waiting in the queue
        released = time.monotonic()
        go_on.set()
        await slow
        done = await asyncio.wait_for(other, 5)
        assert done - released < 0.5
        async with second.read() as session:
            rows = (await session.execute(text("SELECT id FROM row ORDER BY id"))).all()
        assert [r[0] for r in rows] == [1, 2]
        await first.close()
        await second.close()

    asyncio.run(main())


def test_an_in_memory_database_has_no_queue() -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    assert db._batches is not None and db._batches._queue is None
