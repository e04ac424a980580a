"""PostgreSQL's upload locks (storage/upload_locks.py, PostgresAdvisoryLocks): one session
holds them all; when the server ends that session (a restart), the locks are gone with it,
and the next PATCH takes its lock on a new session instead of failing; a lock request
abandoned in flight does not leave its lock behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from storage.database import Database
from storage.upload_locks import UPLOAD_LOCK_CLASS, PostgresAdvisoryLocks
from tests.databases import database_url_for, on_postgres
from tests.tcp_link import TcpLink

pytestmark = pytest.mark.skipif(not on_postgres(), reason="advisory locks: PostgreSQL's")


def test_a_session_the_server_ended_is_replaced_and_its_locks_forgotten(tmp_path: Path) -> None:
    async def main() -> tuple[bool, bool, bool, bool, bool]:
        db = Database(database_url_for(tmp_path))
        locks = PostgresAdvisoryLocks(db)
        other = PostgresAdvisoryLocks(db)  # another node
        first = await locks.try_lock("upload-a")
        excluded = not await other.try_lock("upload-a")
        async with db.write() as session:
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )
        await asyncio.sleep(0.2)  # asyncpg reads the closed socket on the event loop
        # No error: a new session. The old one's lock is gone, and this node knows it.
        second = await locks.try_lock("upload-b")
        still_held = locks.holds("upload-a")
        taken_elsewhere = await other.try_lock("upload-a")
        await locks.close()
        await other.close()
        await db.close()
        return first, excluded, second, still_held, taken_elsewhere

    first, excluded, second, still_held, taken_elsewhere = asyncio.run(main())
    assert first and excluded
    assert second
    assert not still_held
    assert taken_elsewhere


def test_a_lock_request_abandoned_in_flight_is_given_back(tmp_path: Path) -> None:
    """A PATCH cancelled while its lock statement is in flight (its client gone, the server
    stopping): PostgreSQL grants the lock all the same. The node gives it back rather than
    keeping it, unknown, in its session, where no other node could take it until a restart."""
    url = make_url(database_url_for(tmp_path))
    link = TcpLink(url.host or "127.0.0.1", url.port or 5432)
    link.mend()

    async def granted(db: Database) -> int:
        async with db.read() as session:
            found = await session.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid = :cls AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"cls": UPLOAD_LOCK_CLASS},
            )
            return int(found.scalar_one())

    async def main() -> tuple[bool, bool, bool, int]:
        direct = Database(url.render_as_string(False))
        linked = Database(url.set(host="127.0.0.1", port=link.port).render_as_string(False))
        locks = PostgresAdvisoryLocks(linked)
        other = PostgresAdvisoryLocks(direct)  # another node
        assert await locks.try_lock("warm-up")  # its session is open before the answers wait
        await locks.unlock("warm-up")
        link.hold()
        request = asyncio.create_task(locks.try_lock("upload-a"))
        # Decided by PostgreSQL, its answer still in the link.
        was_granted = await _within(10, lambda: _is(granted(direct), 1))
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        link.release()
        taken = await _within(5, lambda: other.try_lock("upload-a"))
        still_held = locks.holds("upload-a")
        await other.unlock("upload-a")
        left = await granted(direct)
        for closing in (locks, other):
            await closing.close()
        for db in (linked, direct):
            await db.close()
        return was_granted, taken, still_held, left

    try:
        was_granted, taken, still_held, left = asyncio.run(main())
    finally:
        link.stop()
    assert was_granted
    assert taken  # another node can write the upload
    assert not still_held
    assert left == 0


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _within(seconds: float, check: Callable[[], Awaitable[bool]]) -> bool:
    """Whether `check` comes true within `seconds` (asked every 20 ms)."""
    for _ in range(int(seconds / 0.02)):
        if await check():
            return True
        await asyncio.sleep(0.02)
    return await check()
