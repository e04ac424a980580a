"""Assembly: the one code path that completes a meeting, whoever calls it; and the other
ends a meeting comes to (missing chunks given up as gaps, silent meetings abandoned).

Finalize, every worker commit and restart recovery all call `assemble_if_ready`; the
compare-and-set on the meeting's state makes it happen exactly once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select, update

from storage.database import Database
from storage.models import Chunk, Meeting, Segment
from storage.state_machine import (
    CHUNK_DONE_STATES,
    ChunkState,
    MeetingState,
    StaleState,
    record_event,
    transition_meeting,
)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    missing: list[dict[str, object]]  # chunk keys finalize named that never arrived
    pending: list[dict[str, object]]  # chunks still uploading or being transcribed


# How many missing seqs past a track's arrived chunks are looked at. Finalize refuses more
# (--max-missing-chunks); this bounds the work for rows written before it did.
MISSING_LOOKED_AT = 10_000


def readiness(meeting: Meeting, chunks: list[Chunk]) -> Readiness:
    """What finalization waits for. O(chunks + missing), whatever last_seq says."""
    gaps = {(track, seq) for track, seq in meeting.gaps or []}
    last_seq = meeting.last_seq or {}
    present: dict[str, set[int]] = {}
    pending: list[dict[str, object]] = []
    for chunk in sorted(chunks, key=lambda c: (c.track, c.seq)):
        present.setdefault(chunk.track, set()).add(chunk.seq)
        if chunk.track not in last_seq or chunk.seq > last_seq[chunk.track]:
            continue
        if ChunkState(chunk.state) not in CHUNK_DONE_STATES:
            pending.append({"track": chunk.track, "seq": chunk.seq, "state": chunk.state})
        elif chunk.state == ChunkState.TRANSCRIBED and not chunk.carry_done:
            pending.append({"track": chunk.track, "seq": chunk.seq, "state": "flushing carry"})
    missing: list[dict[str, object]] = []
    unbounded = False
    for track, last in sorted(last_seq.items()):
        seqs = present.get(track, set())
        looked_at = min(last, len(seqs) + MISSING_LOOKED_AT)
        unbounded |= looked_at < last
        missing += [
            {"track": track, "seq": seq, "gap": (track, seq) in gaps}
            for seq in range(looked_at + 1)
            if seq not in seqs
        ]
    waited_on = [m for m in missing if not m["gap"]]
    ready = (
        meeting.state == MeetingState.FINALIZING and not waited_on and not pending and not unbounded
    )
    return Readiness(ready, missing, pending)


async def give_up_missing(db: Database, meeting_id: str, grace_s: float) -> bool:
    """Past the grace period after finalize, missing chunks become gaps: the meeting completes
    with the gap noted instead of waiting for them forever. True if any gap was recorded."""
    async with db.write() as session:
        meeting = await session.get(Meeting, meeting_id)
        if (
            meeting is None
            or meeting.state != MeetingState.FINALIZING
            or meeting.finalized_at is None
            or time.time() < meeting.finalized_at + grace_s
        ):
            return False
        chunks = list(
            (await session.execute(select(Chunk).where(Chunk.meeting_id == meeting_id)))
            .scalars()
            .all()
        )
        new = [[m["track"], m["seq"]] for m in readiness(meeting, chunks).missing if not m["gap"]]
        if not new:
            return False
        await session.execute(
            update(Meeting).where(Meeting.id == meeting_id).values(gaps=(meeting.gaps or []) + new)
        )
        record_event(
            session,
            meeting_id,
            "meeting.chunks_missing",
            {"missing": [{"track": t, "seq": s} for t, s in new], "grace_s": grace_s},
        )
        return True


async def assemble_if_ready(db: Database, meeting_id: str) -> bool:
    """True if the meeting is complete (now or before)."""
    async with db.read() as session:
        meeting = await session.get(Meeting, meeting_id)
        if meeting is None:
            return False
        if meeting.state == MeetingState.COMPLETE:
            return True
        if meeting.state != MeetingState.FINALIZING:
            return False
    async with db.write() as session:
        meeting = await session.get(Meeting, meeting_id)
        if meeting is None or meeting.state != MeetingState.FINALIZING:
            return meeting is not None and meeting.state == MeetingState.COMPLETE
        chunks = list(
            (await session.execute(select(Chunk).where(Chunk.meeting_id == meeting_id)))
            .scalars()
            .all()
        )
        if not readiness(meeting, chunks).ready:
            return False
        segments = (
            await session.execute(
                select(func.count()).select_from(Segment).where(Segment.meeting_id == meeting_id)
            )
        ).scalar_one()
        failed = [
            {"track": c.track, "seq": c.seq, "state": c.state, "error": c.error}
            for c in chunks
            if c.state in (ChunkState.REJECTED, ChunkState.FAILED)
        ] + [
            {"track": track, "seq": seq, "state": "missing", "error": "never uploaded"}
            for track, seq in meeting.gaps or []
        ]
        try:
            await transition_meeting(
                session,
                meeting,
                MeetingState.COMPLETE,
                event="meeting.completed",
                payload={"segments": segments, "gaps": failed},
                completed_at=time.time(),
            )
        except StaleState:
            pass
        return True


async def finalizing_meetings(db: Database) -> list[str]:
    async with db.read() as session:
        rows = await session.execute(
            select(Meeting.id).where(Meeting.state == MeetingState.FINALIZING)
        )
        return list(rows.scalars().all())


async def abandon_silent_meetings(db: Database, abandon_after_s: float) -> int:
    """Meetings still recording that got no chunk within `abandon_after_s` of creation."""
    cutoff = time.time() - abandon_after_s
    abandoned = 0
    silent_meetings = select(Meeting).where(
        Meeting.state == MeetingState.RECORDING,
        Meeting.created_at < cutoff,
        ~select(Chunk.id).where(Chunk.meeting_id == Meeting.id).exists(),
    )
    # Looked for outside a write transaction first (then decided again inside one): a sweep
    # with nothing to do takes no write lock.
    async with db.read() as session:
        if (await session.execute(silent_meetings.limit(1))).first() is None:
            return 0
    async with db.write() as session:
        silent = (await session.execute(silent_meetings)).scalars()
        for meeting in list(silent):
            try:
                await transition_meeting(
                    session,
                    meeting,
                    MeetingState.ABANDONED,
                    event="meeting.abandoned",
                    payload={"reason": f"no chunk within {abandon_after_s:g}s"},
                )
                abandoned += 1
            except StaleState:
                pass
    return abandoned
