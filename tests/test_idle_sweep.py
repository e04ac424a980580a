"""A recovery sweep with nothing to do takes no write transaction: on SQLite a write
transaction holds the one write lock every upload waits behind, and the sweep runs every
2 s. With something to do, each step still does it (a step's own tests; here one of each
to show the reads first do not hide work)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import select

from server.recovery import RecoverySweeper
from storage.chunk_intake import ChunkIntake
from storage.database import Database
from storage.job_queue import RetryPolicy
from storage.models import Chunk, Meeting
from storage.schema import upgrade
from storage.state_machine import ChunkState, MeetingState, new_chunk, new_meeting
from storage.upload_store import UploadStore, make_upload
from tests.databases import database_url_for


async def _store(db: Database, *, silent_for_s: float, lease_left_s: float) -> None:
    """A meeting recording with a chunk being transcribed (its lease `lease_left_s` from
    now), and a meeting created `silent_for_s` ago that got no chunk. (Now, not when the
    module was imported: a suite runs for minutes.)"""
    now = time.time()
    async with db.write() as s:
        busy = new_meeting(meeting_id="busy", external_id=None, title=None, tracks=[])
        silent = new_meeting(meeting_id="silent", external_id=None, title=None, tracks=[])
        silent.created_at = now - silent_for_s
        s.add_all([busy, silent])
        upload = make_upload(
            upload_id="u0", length=1, meta={}, concat=None, concat_parts=None, expires_at=None
        )
        upload.offset = 1
        upload.kept_with_meeting = True
        s.add(upload)
        await s.flush()
        chunk = new_chunk(meeting_id="busy", track="mic", seq=0, start_ms=0, upload_id="u0")
        chunk.state = ChunkState.TRANSCRIBING  # test setup only
        chunk.lease_owner = "worker-1"
        chunk.lease_expires_at = now + lease_left_s
        chunk.attempts = 1
        s.add(chunk)


async def _sweep_counting_writes(url: str, *, silent_for_s: float, lease_left_s: float):  # type: ignore[no-untyped-def]
    db = Database(url)
    await upgrade(db)
    await _store(db, silent_for_s=silent_for_s, lease_left_s=lease_left_s)
    intake = ChunkIntake(db, None, None)  # type: ignore[arg-type]
    sweeper = RecoverySweeper(
        db,
        intake,
        UploadStore(db, None, intake),  # type: ignore[arg-type]
        RetryPolicy(),
        interval_s=3600,
        missing_grace_s=60,
        abandon_after_s=60,
        upload_expiry_s=3600,
    )
    await sweeper.sweep()  # the first folds the chunk-state deltas the setup made
    writes = 0
    real_write = db.write

    @asynccontextmanager
    async def counted_write() -> AsyncIterator[object]:
        nonlocal writes
        writes += 1
        async with real_write() as session:
            yield session

    db.write = counted_write  # type: ignore[method-assign]
    await sweeper.sweep()
    async with db.read() as s:
        meeting = (await s.execute(select(Meeting.state).where(Meeting.id == "silent"))).one()
        chunk = (await s.execute(select(Chunk.state))).one()
    await db.close()
    return writes, meeting[0], chunk[0]


def test_a_sweep_with_nothing_to_do_takes_no_write_transaction(tmp_path: Path) -> None:
    writes, meeting, chunk = asyncio.run(
        _sweep_counting_writes(database_url_for(tmp_path), silent_for_s=1, lease_left_s=600)
    )
    assert (meeting, chunk) == (MeetingState.RECORDING, ChunkState.TRANSCRIBING)
    assert writes == 0


def test_a_sweep_with_work_still_does_it(tmp_path: Path) -> None:
    # The first sweep does the work; this one counts the second. Both steps act on the
    # first: the silent meeting is abandoned, the expired lease goes back to the queue.
    url = database_url_for(tmp_path)
    writes, meeting, chunk = asyncio.run(
        _sweep_counting_writes(url, silent_for_s=3600, lease_left_s=-60)
    )
    assert (meeting, chunk) == (MeetingState.ABANDONED, ChunkState.QUEUED)
