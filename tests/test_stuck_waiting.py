"""The recovery sweep's safety net for WAITING chunks: it promotes exactly the chunks whose
track may go on, and a backlog of chunks that must wait costs it no write transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import select

from storage.database import Database
from storage.job_queue import promote_stuck_waiting
from storage.models import Chunk, Event
from storage.schema import upgrade
from storage.state_machine import ChunkState, new_chunk, new_meeting
from storage.upload_store import make_upload
from tests.databases import database_url_for

WAITING, QUEUED, DONE = ChunkState.WAITING, ChunkState.QUEUED, ChunkState.TRANSCRIBED


async def _meeting(db: Database, chunks: dict[tuple[str, int], ChunkState], gaps: list) -> None:
    """A meeting `m` whose chunks are (track, seq) -> state, placed there directly."""
    async with db.write() as s:
        meeting = new_meeting(meeting_id="m", external_id=None, title=None, tracks=[])
        meeting.gaps = gaps
        s.add(meeting)
        for track, seq in chunks:
            upload_id = f"u-{track}-{seq}"
            s.add(
                make_upload(
                    upload_id=upload_id,
                    length=1,
                    meta={},
                    concat=None,
                    concat_parts=None,
                    expires_at=None,
                )
            )
        await s.flush()
        for (track, seq), state in chunks.items():
            chunk = new_chunk(
                meeting_id="m", track=track, seq=seq, start_ms=0, upload_id=f"u-{track}-{seq}"
            )
            chunk.state = state  # test setup only: place the row in the state under test
            s.add(chunk)


async def _states(db: Database) -> dict[tuple[str, int], str]:
    async with db.read() as s:
        rows = (await s.execute(select(Chunk.track, Chunk.seq, Chunk.state))).all()
    return {(track, seq): str(state) for track, seq, state in rows}


def test_promotes_exactly_the_chunks_whose_track_may_go_on(tmp_path: Path) -> None:
    chunks = {
        ("a", 0): DONE,
        ("a", 1): WAITING,  # its predecessor is done: promoted
        ("a", 2): WAITING,  # its predecessor was waiting when the sweep looked: stays
        ("b", 3): WAITING,  # seq 2 was given up as a gap: promoted
        ("b", 5): WAITING,  # seq 4 is missing but not given up: stays
        ("c", 0): WAITING,  # the first of its track: promoted
        ("d", 0): QUEUED,
        ("d", 1): WAITING,  # its predecessor is not done yet: stays
        ("e", 0): ChunkState.REJECTED,
        ("e", 1): WAITING,  # a rejected predecessor is done with: promoted
    }

    async def run() -> tuple[int, dict[tuple[str, int], str], list[tuple[str, int]]]:
        db = Database(database_url_for(tmp_path))
        await upgrade(db)
        await _meeting(db, chunks, gaps=[["b", 2]])
        promoted = await promote_stuck_waiting(db)
        states = await _states(db)
        async with db.read() as s:
            events = (await s.execute(select(Event).where(Event.type == "chunk.queued"))).scalars()
            queued = sorted((e.payload["track"], e.payload["seq"]) for e in events)
        await db.close()
        return promoted, states, queued

    promoted, states, queued = asyncio.run(run())
    moved = [("a", 1), ("b", 3), ("c", 0), ("e", 1)]
    assert promoted == len(moved)
    assert queued == moved  # each with its event
    for key, before in chunks.items():
        assert states[key] == (QUEUED if key in moved else before), key


def test_a_backlog_that_must_wait_takes_no_write_transaction(tmp_path: Path) -> None:
    # 200 chunks each waiting behind one queued but not yet transcribed: a worker backlog.
    chunks = {("t", 0): QUEUED} | {("t", seq): WAITING for seq in range(1, 201)}

    async def run() -> tuple[int, int, dict[tuple[str, int], str]]:
        db = Database(database_url_for(tmp_path))
        await upgrade(db)
        await _meeting(db, chunks, gaps=[])
        writes = 0
        real_write = db.write

        @asynccontextmanager
        async def counted_write() -> AsyncIterator[object]:
            nonlocal writes
            writes += 1
            async with real_write() as session:
                yield session

        db.write = counted_write  # type: ignore[method-assign]
        promoted = await promote_stuck_waiting(db)
        states = await _states(db)
        await db.close()
        return promoted, writes, states

    promoted, writes, states = asyncio.run(run())
    assert promoted == 0
    # A write transaction holds SQLite's one write lock: every upload waits behind it.
    assert writes == 0
    assert states == {key: str(state) for key, state in chunks.items()}
