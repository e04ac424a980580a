"""PostgreSQL's upload locks (storage/upload_locks.py, PostgresAdvisoryLocks): one session
holds them all; when the server ends that session (a restart), the locks are gone with it,
and the next PATCH takes its lock on a new session instead of failing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.database import Database
from storage.upload_locks import PostgresAdvisoryLocks
from tests.databases import database_url_for, on_postgres

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
