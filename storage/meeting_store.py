"""Meetings as the API sees them: created (under the key's limit), read with their chunks,
finalized, a failed chunk retried, the transcript read, listed and deleted.

Each rule that needs the database is checked in the transaction of the write it guards and
refused with a named rule (`storage/refusals.py`); the server renders it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from storage import key_usage
from storage.backlog import queue_position, recent_rtf
from storage.blob_store import BlobStore
from storage.database import Database
from storage.job_queue import chunk_at, requeue_failed
from storage.meeting_catalog import (
    Cursor,
    MeetingBusy,
    MeetingSummary,
    delete_meeting,
    list_meetings,
)
from storage.meeting_completion import assemble_if_ready
from storage.models import Chunk, Meeting, Segment, Upload
from storage.refusals import Refused, Rule
from storage.state_machine import (
    ChunkState,
    MeetingState,
    StaleState,
    new_meeting,
    transition_meeting,
)
from storage.upload_store import mark_terminated
from storage.write_transaction import Transaction


@dataclass(frozen=True)
class MeetingRecord:
    """A meeting with its chunks (each with its upload), and where it stands in the queue."""

    meeting: Meeting
    chunks: list[tuple[Chunk, Upload]]
    queue_position: int | None
    recent_rtf: float


@dataclass(frozen=True)
class TranscriptRecord:
    meeting: Meeting
    segments: list[Segment]  # in transcript order: start, track, insertion
    unusable: list[Chunk]  # rejected or failed: the transcript's gaps


async def _owned(session: Transaction, meeting_id: str, owner: str) -> Meeting:
    meeting = await session.get(Meeting, meeting_id)
    # Another key's meeting is not found, not forbidden: its existence stays private.
    if meeting is None or meeting.owner != owner:
        raise Refused(Rule.MEETING_NOT_FOUND, meeting_id)
    return meeting


class MeetingStore:
    def __init__(self, db: Database, blobs: BlobStore | None = None) -> None:
        self.db = db
        self.blobs = blobs

    async def by_external_id(self, owner: str, external_id: str) -> str | None:
        async with self.db.read() as session:
            return (
                await session.execute(
                    select(Meeting.id).where(
                        Meeting.owner == owner, Meeting.external_id == external_id
                    )
                )
            ).scalar_one_or_none()

    async def create(
        self,
        *,
        meeting_id: str,
        owner: str,
        title: str | None,
        external_id: str | None,
        tracks: list[str],
        track_labels: dict[str, str] | None,
        max_open_meetings: int,
        language: str = "en",
        track_languages: dict[str, str] | None = None,
    ) -> tuple[str, bool]:
        """(the meeting's id, whether it was created now). With an `external_id` the key has
        used before, its meeting. Refused past `max_open_meetings` (0: no limit)."""
        if external_id is not None:
            existing = await self.by_external_id(owner, external_id)
            if existing is not None:
                return existing, False
        try:
            async with self.db.write() as session:
                # In the inserting transaction: the count cannot go stale before the insert.
                limit = max_open_meetings
                if limit and await key_usage.open_meetings(session, owner) >= limit:
                    raise Refused(
                        Rule.OPEN_MEETINGS_LIMIT,
                        f"max_open_meetings is {limit}; finalize a recording meeting first",
                    )
                session.add(
                    new_meeting(
                        meeting_id=meeting_id,
                        external_id=external_id,
                        title=title,
                        tracks=tracks,
                        owner=owner,
                        track_labels=track_labels,
                        language=language,
                        track_languages=track_languages,
                    )
                )
        except IntegrityError:
            # Two creations with one external_id raced: the first one is the meeting.
            assert external_id is not None
            existing = await self.by_external_id(owner, external_id)
            assert existing is not None
            return existing, False
        return meeting_id, True

    async def record(self, meeting_id: str, owner: str) -> MeetingRecord:
        async with self.db.read() as session:
            meeting = await _owned(session, meeting_id, owner)
            rows = (
                await session.execute(
                    select(Chunk, Upload)
                    .join(Upload, Upload.id == Chunk.upload_id)
                    .where(Chunk.meeting_id == meeting_id)
                    .order_by(Chunk.track, Chunk.seq)
                )
            ).all()
            position = await queue_position(session, meeting_id, time.time())
            rtf = await recent_rtf(session)
        return MeetingRecord(meeting, [(c, u) for c, u in rows], position, rtf)

    async def finalize(
        self, meeting_id: str, owner: str, last_seq: dict[str, int], max_missing: int
    ) -> None:
        """recording -> finalizing with the last seq of each track, then completes it if it
        is ready. Repeating the same finalize is a no-op; another last_seq is refused."""
        async with self.db.write() as session:
            meeting = await _owned(session, meeting_id, owner)
            if meeting.last_seq is not None:
                if meeting.last_seq != last_seq:
                    raise Refused(
                        Rule.FINALIZE_CONFLICT, f"finalized with last_seq {meeting.last_seq}"
                    )
            else:
                await _check_last_seq(session, meeting, last_seq, max_missing)
                try:
                    await transition_meeting(
                        session,
                        meeting,
                        MeetingState.FINALIZING,
                        event="meeting.finalizing",
                        payload={"last_seq": last_seq},
                        last_seq=last_seq,
                        finalized_at=time.time(),
                    )
                except StaleState:
                    pass
        await assemble_if_ready(self.db, meeting_id)

    async def retry_chunk(self, meeting_id: str, owner: str, track: str, seq: int) -> None:
        """A failed chunk back to the queue, its attempts reset."""
        async with self.db.write() as session:
            await _owned(session, meeting_id, owner)
            chunk = await chunk_at(session, meeting_id, track, seq)
            if chunk is None:
                raise Refused(Rule.CHUNK_NOT_FOUND, f"{track}/{seq}")
            if chunk.state != ChunkState.FAILED:
                raise Refused(Rule.NOT_RETRYABLE, f"chunk is {chunk.state}")
            await requeue_failed(session, chunk)

    async def transcript(self, meeting_id: str, owner: str) -> TranscriptRecord:
        async with self.db.read() as session:
            meeting = await _owned(session, meeting_id, owner)
            segments = (
                await session.execute(
                    select(Segment)
                    .where(Segment.meeting_id == meeting_id)
                    .order_by(Segment.start_ms, Segment.track, Segment.id)
                )
            ).scalars()
            unusable = (
                await session.execute(
                    select(Chunk).where(
                        Chunk.meeting_id == meeting_id,
                        Chunk.state.in_([ChunkState.REJECTED, ChunkState.FAILED]),
                    )
                )
            ).scalars()
            return TranscriptRecord(meeting, list(segments), list(unusable))

    async def page(
        self, owner: str, state: str | None, limit: int, after: Cursor | None
    ) -> list[MeetingSummary]:
        async with self.db.read() as session:
            return await list_meetings(session, owner, state, limit, after)

    async def delete(self, meeting_id: str, owner: str) -> int:
        """The meeting's rows, then its bytes; the number of chunks it had. Refused while a
        chunk is written or transcribed."""
        try:
            async with self.db.write() as session:
                gone = await delete_meeting(session, meeting_id, owner)
        except MeetingBusy as busy:
            chunks = ", ".join(f"{c['track']}/{c['seq']} {c['state']}" for c in busy.chunks[:10])
            raise Refused(Rule.MEETING_BUSY, chunks) from None
        if gone is None:
            raise Refused(Rule.MEETING_NOT_FOUND, meeting_id)
        # Committed: the bytes go now. Should this process die first, the uploads have
        # expired and the expiry sweep deletes them.
        if self.blobs is not None:
            for upload_id in gone.upload_ids:
                await self.blobs.delete(upload_id)
            if gone.upload_ids:
                async with self.db.write() as session:
                    await mark_terminated(session, gone.upload_ids, time.time())
            for name in gone.carry_names:
                await self.blobs.delete_carry(name)
        return len(gone.upload_ids)


async def _check_last_seq(
    session: Transaction, meeting: Meeting, last_seq: dict[str, int], max_missing: int
) -> None:
    unknown = [t for t in last_seq if meeting.tracks and t not in meeting.tracks]
    if unknown:
        raise Refused(Rule.UNKNOWN_TRACK, f"{unknown}; declared: {meeting.tracks}")
    chunks = (
        await session.execute(select(Chunk.track, Chunk.seq).where(Chunk.meeting_id == meeting.id))
    ).all()
    beyond = [
        {"track": track, "seq": seq}
        for track, seq in chunks
        if track not in last_seq or seq > last_seq[track]
    ]
    if beyond:
        raise Refused(Rule.INVALID_FIELD, f"chunks exist past the given last_seq: {beyond[:10]}")
    # A finalize may come before the last chunks (a client that finalizes, then drains its
    # spool), but it can only name chunks a client could still send: waiting for 10**30 of
    # them would make every readiness check (and the sweep after a restart) count to 10**30.
    arrived = len(chunks)  # all at or below last_seq, as just checked
    missing = sum(last + 1 for last in last_seq.values()) - arrived
    if missing > max_missing:
        raise Refused(
            Rule.INVALID_FIELD,
            f"last_seq names {missing} chunks that have not arrived; at most "
            f"{max_missing} may still be missing at finalize (--max-missing-chunks)",
        )
