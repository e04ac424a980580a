"""The transcription backlog, read from the database so that every node and every worker
process counts: queue depth, ages, per-meeting lag, and the history behind the histograms."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.chunk_state_counts import chunks_by_state
from storage.database import Database
from storage.job_queue import CLAIM_ORDER
from storage.metric_rollups import HistogramCounts, histograms
from storage.models import Chunk, Meeting
from storage.state_machine import ChunkState, MeetingState

PENDING = (
    ChunkState.UPLOADED,
    ChunkState.WAITING,
    ChunkState.QUEUED,
    ChunkState.TRANSCRIBING,
)
ACTIVE_MEETINGS = (MeetingState.RECORDING, MeetingState.FINALIZING)
DEFAULT_RTF = 0.15  # before any job finished: tiny.en int8 on 2 threads is about this


@dataclass(frozen=True)
class MeetingLag:
    pending_audio_s: float  # uploaded but not yet transcribed
    since_newest_chunk_s: float | None  # time since the newest chunk landed
    owner: str = ""  # the API key (fingerprint) the meeting belongs to


@dataclass
class Backlog:
    queued_jobs: int = 0  # queued or waiting for their predecessor
    queued_audio_s: float = 0.0
    pending_audio_s: float = 0.0  # queued, waiting, uploaded or being transcribed
    # Pending audio less the chunks behind a hole in their track (a seq that never arrived):
    # those may never become work, and must not let one meeting fill the backlog for all.
    workable_audio_s: float = 0.0
    oldest_queued_age_s: float = 0.0
    transcribing: int = 0
    chunks_by_state: dict[str, int] = field(default_factory=dict)
    meetings: dict[str, MeetingLag] = field(default_factory=dict)
    # The /metrics histograms (storage/metric_rollups.py), when asked for.
    histograms: dict[str, HistogramCounts] = field(default_factory=dict)


def _first_hole(present: set[int]) -> int:
    """The lowest seq of a track that has not arrived."""
    return next(s for s in range(len(present) + 1) if s not in present)


async def read_backlog(db: Database, now: float, *, with_histograms: bool = False) -> Backlog:
    async with db.read() as session:
        return await backlog_snapshot(session, now, with_histograms=with_histograms)


async def read_recent_rtf(db: Database) -> float:
    async with db.read() as session:
        return await recent_rtf(session)


async def backlog_snapshot(
    session: AsyncSession, now: float, *, with_histograms: bool = False
) -> Backlog:
    b = Backlog()
    b.chunks_by_state = await chunks_by_state(session)
    b.transcribing = b.chunks_by_state.get(ChunkState.TRANSCRIBING, 0)
    queued = (ChunkState.QUEUED, ChunkState.WAITING)
    rows = (
        await session.execute(
            select(
                Chunk.state,
                Chunk.duration_s,
                Chunk.queued_at,
                Chunk.meeting_id,
                Chunk.uploaded_at,
                Chunk.track,
                Chunk.seq,
            )
            .join(Meeting, Meeting.id == Chunk.meeting_id)
            .where(Meeting.state.in_(ACTIVE_MEETINGS))
        )
    ).all()
    newest: dict[str, float] = {}
    pending: dict[str, float] = {}
    seqs: dict[tuple[str, str], set[int]] = {}
    for _state, _duration, _queued_at, meeting_id, _uploaded_at, track, seq in rows:
        seqs.setdefault((meeting_id, track), set()).add(seq)
    hole = {key: _first_hole(present) for key, present in seqs.items()}
    for state, duration, queued_at, meeting_id, uploaded_at, track, seq in rows:
        if uploaded_at is not None:
            newest[meeting_id] = max(newest.get(meeting_id, 0.0), uploaded_at)
        pending.setdefault(meeting_id, 0.0)
        if state in PENDING:
            b.pending_audio_s += duration or 0.0
            pending[meeting_id] += duration or 0.0
            if state != ChunkState.WAITING or seq <= hole[meeting_id, track]:
                b.workable_audio_s += duration or 0.0
        if state in queued:
            b.queued_jobs += 1
            b.queued_audio_s += duration or 0.0
            if queued_at is not None:
                b.oldest_queued_age_s = max(b.oldest_queued_age_s, now - queued_at)
    active = (
        await session.execute(
            select(Meeting.id, Meeting.owner).where(Meeting.state.in_(ACTIVE_MEETINGS))
        )
    ).all()
    for meeting_id, owner in active:
        landed = newest.get(meeting_id)
        b.meetings[meeting_id] = MeetingLag(
            pending.get(meeting_id, 0.0), None if landed is None else now - landed, owner
        )
    if with_histograms:
        b.histograms = await histograms(session)
    return b


async def queue_position(session: AsyncSession, meeting_id: str, now: float) -> int | None:
    """How many other meetings' chunks a worker takes before this meeting's next one (the
    claim order is round-robin between meetings). None: nothing of this meeting is queued."""
    rows = (
        (
            await session.execute(
                select(Chunk.meeting_id)
                .join(Meeting, Meeting.id == Chunk.meeting_id)
                .where(Chunk.state == ChunkState.QUEUED, Chunk.next_attempt_at <= now)
                .order_by(*CLAIM_ORDER)
            )
        )
        .scalars()
        .all()
    )
    ahead: list[str] = []
    for other in rows:
        if other == meeting_id:
            return len(ahead)
        if other not in ahead:
            ahead.append(other)
    return None


async def recent_rtf(session: AsyncSession) -> float:
    rows = (
        await session.execute(
            select(Chunk.transcribe_s, Chunk.duration_s)
            .where(Chunk.transcribe_s.is_not(None), Chunk.duration_s > 0)
            .order_by(Chunk.transcribed_at.desc())
            .limit(200)
        )
    ).all()
    ratios = [elapsed / duration for elapsed, duration in rows]
    return sum(ratios) / len(ratios) if ratios else DEFAULT_RTF
