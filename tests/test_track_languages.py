"""A track's language in storage: asked for by the meeting or the track, or detected once
and then kept; the job a worker claims carries it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.database import Database
from storage.job_queue import DetectedLanguage, claim_next_job, complete_job
from storage.models import Meeting
from storage.schema import upgrade
from storage.state_machine import ChunkState, new_chunk, new_meeting
from storage.track_languages import record_detected, track_language
from storage.upload_store import make_upload
from tests.databases import database_url_for


def test_which_language_a_track_uses() -> None:
    meeting = Meeting(
        language="auto",
        track_languages={"b": "es"},
        detected_languages={"c": {"language": "de", "probability": 0.9}},
    )
    assert track_language(meeting, "a").language == "auto"
    assert track_language(meeting, "a").source == "meeting"
    assert (track_language(meeting, "b").language, track_language(meeting, "b").source) == (
        "es",
        "track",
    )
    c = track_language(meeting, "c")
    assert (c.language, c.source, c.probability) == ("de", "detected", 0.9)
    # Meetings from before languages were English.
    assert track_language(Meeting(), "a").language == "en"


async def _meeting_with_chunks(db: Database, meeting_id: str, track: str, count: int) -> None:
    async with db.write() as s:
        s.add(
            new_meeting(
                meeting_id=meeting_id, external_id=None, title=None, tracks=[], language="auto"
            )
        )
        for seq in range(count):
            upload_id = f"{meeting_id}-{track}-{seq}"
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
            chunk = new_chunk(
                meeting_id=meeting_id,
                track=track,
                seq=seq,
                start_ms=seq * 5000,
                upload_id=upload_id,
            )
            s.add(chunk)
            await s.flush()
            # test setup only: every chunk ready to claim
            chunk.state = ChunkState.QUEUED.value


def _on_a_fresh_database(tmp_path: Path, scenario) -> None:  # type: ignore[no-untyped-def]
    async def opened() -> None:
        db = Database(database_url_for(tmp_path))
        await upgrade(db)
        try:
            await scenario(db)
        finally:
            await db.close()

    asyncio.run(opened())


def test_the_first_detection_is_kept_and_later_jobs_carry_it(tmp_path: Path) -> None:
    async def scenario(db: Database) -> None:
        await _meeting_with_chunks(db, "m1", "t", 2)
        first = await claim_next_job(db, "w1", 60)
        assert first is not None and first.language == "auto"
        assert await complete_job(db, first, [], None, 1.0, DetectedLanguage("de", 0.8))
        second = await claim_next_job(db, "w1", 60)
        assert second is not None and second.seq != first.seq
        assert second.language == "de"  # no detection again: the track keeps it
        # A later detection (another language) changes nothing: the first stays.
        assert await complete_job(db, second, [], None, 1.0, DetectedLanguage("nl", 0.4))
        async with db.read() as s:
            meeting = await s.get(Meeting, "m1")
            assert meeting is not None
            assert meeting.detected_languages == {"t": {"language": "de", "probability": 0.8}}

    _on_a_fresh_database(tmp_path, scenario)


def test_a_job_whose_lease_was_lost_keeps_no_language(tmp_path: Path) -> None:
    async def scenario(db: Database) -> None:
        await _meeting_with_chunks(db, "m2", "t", 1)
        job = await claim_next_job(db, "w1", 60)
        assert job is not None
        stolen = type(job)(**{**vars(job), "owner": "someone-else"})
        assert not await complete_job(db, stolen, [], None, 1.0, DetectedLanguage("de", 0.8))
        async with db.read() as s:
            meeting = await s.get(Meeting, "m2")
            assert meeting is not None and not meeting.detected_languages

    _on_a_fresh_database(tmp_path, scenario)


def test_two_tracks_detected_at_once_are_both_kept(tmp_path: Path) -> None:
    async def scenario(db: Database) -> None:
        await _meeting_with_chunks(db, "m3", "a", 1)

        async def detect(track: str, language: str) -> bool:
            async with db.write() as s:
                return await record_detected(s, "m3", track, language, 0.9)

        assert await asyncio.gather(detect("a", "de"), detect("b", "es")) == [True, True]
        async with db.read() as s:
            meeting = await s.get(Meeting, "m3")
            assert meeting is not None
            assert {t: d["language"] for t, d in meeting.detected_languages.items()} == {
                "a": "de",
                "b": "es",
            }

    _on_a_fresh_database(tmp_path, scenario)
