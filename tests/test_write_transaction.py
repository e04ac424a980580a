"""Write transactions (storage/write_transaction.py): Core statements on the connection, an
ORM session only where a write uses the ORM, statement order kept between the two, and what
a transaction logged written at its end or not at all. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.commit_time_writes import EVENTS, UPLOAD_BYTES, log_event
from storage.database import Database
from storage.models import Chunk
from storage.state_machine import MEETINGS, ChunkState, new_meeting
from tests.upload_store_setup import chunk_upload, fresh_database, store_with_a_meeting


@contextmanager
def _orm_sessions_begun() -> Iterator[list[object]]:
    begun: list[object] = []

    def on_begin(session: Session, _transaction: object, _connection: object) -> None:
        begun.append(session)

    event.listen(Session, "after_begin", on_begin)
    try:
        yield begun
    finally:
        event.remove(Session, "after_begin", on_begin)


async def _event_types(db: Database) -> list[str]:
    async with db.read() as session:
        rows = await session.execute(select(EVENTS.c.type).order_by(EVENTS.c.id))
        return [r[0] for r in rows]


def test_an_upload_is_created_and_completed_without_an_orm_session(tmp_path: Path) -> None:
    async def main() -> tuple[list[object], ChunkState, list[str], int]:
        db = await fresh_database(tmp_path)
        store = await store_with_a_meeting(db, tmp_path)
        upload = chunk_upload(0)
        with _orm_sessions_begun() as begun:
            assert await store.create(upload) is None
            assert await store.commit_offset(upload, 0, 100, None)
        async with db.read() as session:
            chunk = (await session.execute(select(Chunk))).scalar_one()
            counted = (await session.execute(select(UPLOAD_BYTES.c.bytes))).scalar_one()
        types = await _event_types(db)
        await db.close()
        return begun, chunk.state, types, counted

    begun, state, types, counted = asyncio.run(main())
    assert begun == []
    # What the transactions logged and counted was written at their ends all the same.
    assert state == ChunkState.QUEUED
    assert types == ["chunk.uploaded", "chunk.queued"]
    assert counted == 100


def test_an_orm_write_reaches_the_database_before_the_next_core_statement(
    tmp_path: Path,
) -> None:
    async def main() -> list[str]:
        db = await fresh_database(tmp_path)
        async with db.write() as transaction:
            transaction.add(new_meeting(meeting_id="m1", external_id=None, title=None, tracks=[]))
            # A Core statement on the connection: the ORM's pending insert goes first.
            rows = await transaction.execute(select(MEETINGS.c.id))
            seen = [r[0] for r in rows]
        await db.close()
        return seen

    assert asyncio.run(main()) == ["m1"]


def test_logged_events_are_written_with_the_commit_and_not_at_all_on_rollback(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[list[str], int]:
        db = await fresh_database(tmp_path)
        wakes: list[int] = []
        db.on_events_committed.append(lambda: wakes.append(1))
        with pytest.raises(RuntimeError):
            async with db.write() as transaction:
                log_event(transaction, "m1", "meeting.rolled.back", {})
                raise RuntimeError("refused by a rule")
        async with db.write() as transaction:
            log_event(transaction, "m1", "meeting.first", {})
            log_event(transaction, "m1", "meeting.second", {})
        types = await _event_types(db)
        await db.close()
        return types, len(wakes)

    types, wakes = asyncio.run(main())
    assert types == ["meeting.first", "meeting.second"]
    assert wakes == 1  # event feeds are woken by the commit that wrote events only


def test_a_transaction_whose_orm_flush_fails_alone_is_rolled_back(tmp_path: Path) -> None:
    async def add(db: Database, meeting_id: str, event_type: str) -> None:
        async with db.write() as transaction:
            log_event(transaction, meeting_id, event_type, {})
            transaction.add(
                new_meeting(meeting_id=meeting_id, external_id=None, title=None, tracks=[])
            )

    async def main() -> tuple[list[BaseException | None], list[str], list[str]]:
        db = await fresh_database(tmp_path)
        await add(db, "taken", "first")
        # Queued up together (one group commit on SQLite); the middle one's insert fails at
        # its flush, at the end of its block.
        results = await asyncio.gather(
            add(db, "a", "a.created"),
            add(db, "taken", "taken.again"),
            add(db, "b", "b.created"),
            return_exceptions=True,
        )
        async with db.read() as session:
            ids = [r[0] for r in await session.execute(select(MEETINGS.c.id).order_by("id"))]
        types = await _event_types(db)
        await db.close()
        return results, ids, types

    results, ids, types = asyncio.run(main())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], IntegrityError)
    assert ids == ["a", "b", "taken"]
    assert types == ["first", "a.created", "b.created"]


def test_a_detached_object_reads_in_a_process_that_made_no_other(tmp_path: Path) -> None:
    """`storage.models.detached` in a fresh interpreter, before any mapped object was built
    the usual way (a second server process answering a HEAD first did just that)."""
    program = (
        "from storage.models import Upload, detached\n"
        "upload = detached(Upload, {'id': 'u1', 'owner': 'key', 'offset': 7})\n"
        "print(upload.owner, upload.offset)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["key", "7"]
