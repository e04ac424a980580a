"""Meetings as a list (newest first, paged, by state) and their deletion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update

from storage.models import Chunk, Delivery, Event, Meeting, Segment, Upload
from storage.state_machine import ChunkState, record_event
from storage.write_transaction import Transaction

# A meeting is not deleted while bytes are being written into one of its chunks or a worker
# holds one: both would write rows and files for a meeting that no longer exists.
BUSY_STATES = (ChunkState.CREATED, ChunkState.UPLOADING, ChunkState.TRANSCRIBING)


@dataclass(frozen=True)
class MeetingSummary:
    id: str
    title: str | None
    external_id: str | None
    state: str
    created_at: float
    finalized_at: float | None
    completed_at: float | None
    tracks: list[str]
    track_labels: dict[str, str]
    chunks: int
    duration_s: float  # from the meeting's start to the end of its last chunk's audio


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last meeting's (created_at, id)."""

    created_at: float
    id: str


async def list_meetings(
    session: Transaction, owner: str, state: str | None, limit: int, after: Cursor | None
) -> list[MeetingSummary]:
    """Up to `limit` of `owner`'s meetings, newest first, after `after`; one query for the
    meetings and their chunk aggregates, one for the tracks their chunks named."""
    end_s = Chunk.start_ms / 1000.0 + func.coalesce(Chunk.duration_s, 0.0)
    query = (
        select(Meeting, func.count(Chunk.id), func.max(end_s))
        .outerjoin(Chunk, Chunk.meeting_id == Meeting.id)
        .where(Meeting.owner == owner)
        .group_by(Meeting.id)
        .order_by(Meeting.created_at.desc(), Meeting.id.desc())
        .limit(limit)
    )
    if state is not None:
        query = query.where(Meeting.state == state)
    if after is not None:
        query = query.where(
            or_(
                Meeting.created_at < after.created_at,
                and_(Meeting.created_at == after.created_at, Meeting.id < after.id),
            )
        )
    rows = (await session.execute(query)).all()
    named: dict[str, set[str]] = {}
    if rows:
        ids = [meeting.id for meeting, _count, _end in rows]
        pairs = await session.execute(
            select(Chunk.meeting_id, Chunk.track).where(Chunk.meeting_id.in_(ids)).distinct()
        )
        for meeting_id, track in pairs:
            named.setdefault(meeting_id, set()).add(track)
    return [
        MeetingSummary(
            id=meeting.id,
            title=meeting.title,
            external_id=meeting.external_id,
            state=meeting.state,
            created_at=meeting.created_at,
            finalized_at=meeting.finalized_at,
            completed_at=meeting.completed_at,
            tracks=sorted(set(meeting.tracks or []) | named.get(meeting.id, set())),
            track_labels=dict(meeting.track_labels or {}),
            chunks=int(count),
            duration_s=round(float(end or 0.0), 3),
        )
        for meeting, count, end in rows
    ]


class MeetingBusy(Exception):
    """Some chunk is being written or transcribed."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        super().__init__(chunks)
        self.chunks = chunks


@dataclass
class DeletedMeeting:
    """What the caller removes from the blob store once the deletion has committed."""

    upload_ids: list[str] = field(default_factory=list)
    carry_names: list[str] = field(default_factory=list)


async def delete_meeting(
    session: Transaction, meeting_id: str, owner: str
) -> DeletedMeeting | None:
    """Deletes the meeting's rows (chunks, transcript segments, events and their webhook
    deliveries) in the caller's transaction and records `meeting.deleted`. Its uploads stay
    as rows that expire at once: if the caller dies before deleting their bytes, the expiry
    sweep does. None when there is no such meeting for `owner`; MeetingBusy when it may not
    go yet."""
    meeting = (
        await session.execute(select(Meeting).where(Meeting.id == meeting_id).with_for_update())
    ).scalar_one_or_none()
    if meeting is None or meeting.owner != owner:
        return None
    chunks = list(
        (await session.execute(select(Chunk).where(Chunk.meeting_id == meeting_id))).scalars()
    )
    busy = [
        {"track": c.track, "seq": c.seq, "state": c.state} for c in chunks if c.state in BUSY_STATES
    ]
    if busy:
        raise MeetingBusy(busy)
    gone = DeletedMeeting(
        upload_ids=[c.upload_id for c in chunks],
        carry_names=[c.carry_path for c in chunks if c.carry_path],
    )
    event_ids = select(Event.id).where(Event.meeting_id == meeting_id)
    await session.execute(delete(Delivery).where(Delivery.event_id.in_(event_ids)))
    await session.execute(delete(Event).where(Event.meeting_id == meeting_id))
    await session.execute(delete(Segment).where(Segment.meeting_id == meeting_id))
    await session.execute(delete(Chunk).where(Chunk.meeting_id == meeting_id))
    if gone.upload_ids:
        await session.execute(
            update(Upload).where(Upload.id.in_(gone.upload_ids)).values(expires_at=0.0)
        )
    await session.delete(meeting)
    # Downstream hears of it (webhooks subscribed to meeting.deleted); the event outlives
    # the meeting's own, which are gone with it.
    record_event(session, meeting_id, "meeting.deleted", {"meeting_id": meeting_id})
    return gone
