"""The backlog as the database sums it (storage/backlog.py): what is pending, what is work,
what is queued and how old, per active meeting; complete meetings and chunks behind a hole
in their track left out where they must be."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.backlog import MeetingLag, read_backlog
from storage.database import Database
from storage.schema import upgrade
from storage.state_machine import ChunkState, MeetingState, new_chunk, new_meeting
from storage.upload_store import make_upload
from tests.databases import database_url_for

S = ChunkState
NOW = 1000.0
MEETINGS = {"a": MeetingState.RECORDING, "b": MeetingState.FINALIZING}
MEETINGS |= {"c": MeetingState.COMPLETE, "d": MeetingState.RECORDING}
# (meeting, track, seq): (state, duration_s, uploaded_at, queued_at)
CHUNKS = {
    ("a", "mic", 0): (S.TRANSCRIBED, 30.0, 100.0, 90.0),
    ("a", "mic", 1): (S.QUEUED, 30.0, 190.0, 200.0),
    ("a", "mic", 2): (S.WAITING, 30.0, 210.0, None),  # behind seq 1: work
    ("a", "mic", 4): (S.WAITING, 30.0, None, None),  # behind the hole at 3: not work
    ("a", "sys", 1): (S.WAITING, 10.0, None, None),  # seq 0 never came: not work
    ("a", "cam", 0): (S.TRANSCRIBED, 5.0, 100.0, 90.0),
    ("a", "cam", 2): (S.QUEUED, 5.0, 205.0, 230.0),  # promoted past the hole at 1
    ("a", "cam", 3): (S.WAITING, 5.0, None, None),  # behind seq 2, which is queued: work
    ("b", "t", 0): (S.TRANSCRIBING, 20.0, 300.0, 250.0),
    ("b", "t", 1): (S.UPLOADED, None, 310.0, None),  # not validated yet: no duration
    ("c", "t", 0): (S.WAITING, 99.0, 400.0, 5.0),  # a complete meeting: not counted
}


async def _store(db: Database) -> None:
    async with db.write() as s:
        for meeting_id, state in MEETINGS.items():
            meeting = new_meeting(meeting_id=meeting_id, external_id=None, title=None, tracks=[])
            meeting.state = state  # test setup only
            meeting.owner = f"key-{meeting_id}"
            s.add(meeting)
        for meeting_id, track, seq in CHUNKS:
            s.add(
                make_upload(
                    upload_id=f"u-{meeting_id}-{track}-{seq}",
                    length=1,
                    meta={},
                    concat=None,
                    concat_parts=None,
                    expires_at=None,
                )
            )
        await s.flush()
        for (meeting_id, track, seq), (state, duration, uploaded, queued) in CHUNKS.items():
            chunk = new_chunk(
                meeting_id=meeting_id,
                track=track,
                seq=seq,
                start_ms=0,
                upload_id=f"u-{meeting_id}-{track}-{seq}",
            )
            chunk.state = state  # test setup only
            chunk.duration_s = duration
            chunk.uploaded_at = uploaded
            chunk.queued_at = queued
            s.add(chunk)


def test_the_backlog_summed_by_the_database(tmp_path: Path) -> None:
    async def run():  # type: ignore[no-untyped-def]
        db = Database(database_url_for(tmp_path))
        await upgrade(db)
        await _store(db)
        backlog = await read_backlog(db, NOW)
        await db.close()
        return backlog

    b = asyncio.run(run())
    # Pending: queued, waiting, uploaded or being transcribed, in active meetings.
    assert b.pending_audio_s == 30 + 30 + 30 + 10 + 5 + 5 + 20 + 0
    # Work: not the chunks waiting on a seq that never arrived.
    assert b.workable_audio_s == 30 + 30 + 5 + 5 + 20
    assert (b.queued_jobs, b.queued_audio_s) == (6, 110.0)
    assert b.oldest_queued_age_s == NOW - 200.0  # the oldest queued_at of a queued chunk
    assert b.meetings == {
        "a": MeetingLag(110.0, NOW - 210.0, "key-a"),
        "b": MeetingLag(20.0, NOW - 310.0, "key-b"),
        "d": MeetingLag(0.0, None, "key-d"),  # recording, nothing uploaded yet
    }


def test_an_empty_backlog(tmp_path: Path) -> None:
    async def run():  # type: ignore[no-untyped-def]
        db = Database(database_url_for(tmp_path))
        await upgrade(db)
        backlog = await read_backlog(db, NOW)
        await db.close()
        return backlog

    b = asyncio.run(run())
    assert (b.pending_audio_s, b.workable_audio_s, b.queued_jobs, b.oldest_queued_age_s) == (
        0.0,
        0.0,
        0,
        0.0,
    )
    assert b.meetings == {}
