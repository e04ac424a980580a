"""The transcription backlog, read from the database so that every node and every worker
process counts: queue depth, ages, per-meeting lag, and the history behind the histograms."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, case, exists, func, or_, select

from storage.chunk_state_counts import chunks_by_state
from storage.database import Database
from storage.job_queue import CLAIM_ORDER
from storage.metric_rollups import HistogramCounts, histograms
from storage.models import Chunk, Meeting
from storage.state_machine import CHUNKS, MEETINGS, ChunkState, MeetingState
from storage.write_transaction import Transaction

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


async def read_backlog(db: Database, now: float, *, with_histograms: bool = False) -> Backlog:
    async with db.read() as session:
        return await backlog_snapshot(session, now, with_histograms=with_histograms)


async def read_recent_rtf(db: Database) -> float:
    async with db.read() as session:
        return await recent_rtf(session)


# The backlog is summed by the database, one row per active meeting. It was every chunk of
# every active meeting read into Python on each /metrics scrape and each POST /meetings:
# with 50,000 chunks in 50 live meetings the server's RSS jumped by 190 MiB when their
# recorders opened new meetings together (bench/README.md, "A long-running server").
# Then it was every chunk of every active meeting summed in SQL, transcribed ones too: with
# a million chunks in 189 meetings still recording, 1.15 s per scrape and per creation
# (`./dev bench metrics_scale`). Now only pending chunks are read (found through the claim
# index on state), and each meeting's newest upload is one probe of an index.
_QUEUED = (ChunkState.QUEUED, ChunkState.WAITING)
_PREVIOUS = CHUNKS.alias("previous_chunk")
# A waiting chunk whose predecessor never arrived is behind a hole, and so is every waiting
# chunk above it in its track: they wait on it. Per track, the lowest such seq. (A chunk
# promoted past a hole by the recovery sweep is queued, not waiting: the chunks behind it
# are work again.)
_FIRST_ORPHAN = (
    select(CHUNKS.c.meeting_id, CHUNKS.c.track, func.min(CHUNKS.c.seq).label("seq"))
    .where(
        CHUNKS.c.state == ChunkState.WAITING,
        CHUNKS.c.seq > 0,
        ~exists().where(
            _PREVIOUS.c.meeting_id == CHUNKS.c.meeting_id,
            _PREVIOUS.c.track == CHUNKS.c.track,
            _PREVIOUS.c.seq == CHUNKS.c.seq - 1,
        ),
    )
    .group_by(CHUNKS.c.meeting_id, CHUNKS.c.track)
    .cte("first_orphan")
)
_DURATION = func.coalesce(CHUNKS.c.duration_s, 0.0)
_IS_QUEUED = CHUNKS.c.state.in_(_QUEUED)
_IS_WORKABLE = or_(
    CHUNKS.c.state != ChunkState.WAITING,
    _FIRST_ORPHAN.c.seq.is_(None),
    CHUNKS.c.seq < _FIRST_ORPHAN.c.seq,
)
_PER_MEETING = (
    select(
        CHUNKS.c.meeting_id,
        func.sum(_DURATION),
        func.sum(case((_IS_WORKABLE, _DURATION), else_=0.0)),
        func.count(case((_IS_QUEUED, CHUNKS.c.id))),
        func.sum(case((_IS_QUEUED, _DURATION), else_=0.0)),
        func.min(case((_IS_QUEUED, CHUNKS.c.queued_at))),
    )
    .select_from(
        CHUNKS.join(
            MEETINGS,
            and_(MEETINGS.c.id == CHUNKS.c.meeting_id, MEETINGS.c.state.in_(ACTIVE_MEETINGS)),
        ).outerjoin(
            _FIRST_ORPHAN,
            and_(
                _FIRST_ORPHAN.c.meeting_id == CHUNKS.c.meeting_id,
                _FIRST_ORPHAN.c.track == CHUNKS.c.track,
            ),
        )
    )
    .where(CHUNKS.c.state.in_(PENDING))
    .group_by(CHUNKS.c.meeting_id)
)
_NEWEST = CHUNKS.alias("newest_chunk")
# Each active meeting's newest upload: a probe of ix_chunks_meeting_uploaded per meeting.
_ACTIVE = select(
    MEETINGS.c.id,
    MEETINGS.c.owner,
    select(func.max(_NEWEST.c.uploaded_at))
    .where(_NEWEST.c.meeting_id == MEETINGS.c.id)
    .scalar_subquery(),
).where(MEETINGS.c.state.in_(ACTIVE_MEETINGS))


async def backlog_snapshot(
    session: Transaction, now: float, *, with_histograms: bool = False
) -> Backlog:
    b = Backlog()
    b.chunks_by_state = await chunks_by_state(session)
    b.transcribing = b.chunks_by_state.get(ChunkState.TRANSCRIBING, 0)
    pending: dict[str, float] = {}
    oldest_queued_at: float | None = None
    for row in await session.execute(_PER_MEETING):
        meeting_id, pending_s, workable_s, queued, queued_s, first_queued_at = row
        pending[meeting_id] = pending_s or 0.0
        b.pending_audio_s += pending_s or 0.0
        b.workable_audio_s += workable_s or 0.0
        b.queued_jobs += queued
        b.queued_audio_s += queued_s or 0.0
        if first_queued_at is not None:
            oldest_queued_at = min(first_queued_at, oldest_queued_at or first_queued_at)
    if oldest_queued_at is not None:
        b.oldest_queued_age_s = max(0.0, now - oldest_queued_at)
    for meeting_id, owner, landed in await session.execute(_ACTIVE):
        b.meetings[meeting_id] = MeetingLag(
            pending.get(meeting_id, 0.0), None if landed is None else now - landed, owner
        )
    if with_histograms:
        b.histograms = await histograms(session)
    return b


async def queue_position(session: Transaction, meeting_id: str, now: float) -> int | None:
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


async def recent_rtf(session: Transaction) -> float:
    rows = (
        await session.execute(
            select(Chunk.transcribe_s, Chunk.duration_s)
            # transcribed_at in the filter too, so the index on it is walked from its newest
            # entry over transcribed chunks only: without it, a server with none transcribed
            # yet walked every chunk row (each meeting view and admission asks this).
            .where(
                Chunk.transcribed_at.is_not(None),
                Chunk.transcribe_s.is_not(None),
                Chunk.duration_s > 0,
            )
            .order_by(Chunk.transcribed_at.desc())
            .limit(200)
        )
    ).all()
    ratios = [elapsed / duration for elapsed, duration in rows]
    return sum(ratios) / len(ratios) if ratios else DEFAULT_RTF
