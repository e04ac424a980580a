"""The transcription queue: the chunk rows themselves, claimed with leases.

Two kinds of job:
- a chunk job: a QUEUED chunk; it transcribes the carry of the previous chunk of its track
  followed by its own audio, commits the segments before the last pause and keeps the rest
  as its own carry;
- a tail job: the carry of a TRANSCRIBED chunk that no successor will consume (the track
  ended at finalize, or the next chunk was rejected or failed); it is transcribed alone.

Claims select candidates, then compare-and-set them, so a job is never claimed twice. On
PostgreSQL the candidates are read `FOR UPDATE SKIP LOCKED`: workers on several machines
each take different rows instead of queueing behind one another's row locks. SQLite has
no row locks (and ignores the clause): its writers are serialised by BEGIN IMMEDIATE.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, bindparam, false, or_, select, update

from storage.database import Database
from storage.field_rules import is_storable_text
from storage.models import Chunk, Meeting, Segment, detached
from storage.prepared_statements import PreparedStatement, fetch_first
from storage.state_machine import (
    CHUNK_DONE_STATES,
    CHUNKS,
    MEETINGS,
    ChunkState,
    MeetingState,
    StaleState,
    record_event,
    transition_chunk,
)
from storage.track_languages import record_detected, track_language
from storage.write_transaction import Transaction


@dataclass(frozen=True)
class Carry:
    path: str
    start_ms: int
    samples: int
    state: dict[str, Any] | None = None  # the decoder's state, as the worker wrote it


@dataclass(frozen=True)
class Job:
    kind: str  # "chunk" | "tail"
    chunk_id: int
    meeting_id: str
    track: str
    seq: int
    start_ms: int
    upload_id: str
    owner: str
    flush: bool  # transcribe everything, keep no carry
    carry_in: Carry | None  # audio that comes before this job's own audio
    carry_from_chunk: int | None  # whose carry this job consumes
    language: str  # the track's language, or "auto" while it is to be detected


@dataclass(frozen=True)
class DetectedLanguage:
    language: str
    probability: float


@dataclass(frozen=True)
class NewWord:
    start_ms: int
    end_ms: int
    text: str
    probability: float


@dataclass(frozen=True)
class NewSegment:
    start_ms: int
    end_ms: int
    text: str
    words: tuple[NewWord, ...] = ()

    def words_json(self) -> list[dict[str, Any]]:
        return [
            {
                "start": w.start_ms / 1000,
                "end": w.end_ms / 1000,
                "word": w.text,
                "probability": w.probability,
            }
            for w in self.words
        ]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0

    def delay(self, attempts: int) -> float:
        return min(self.backoff_max_s, self.backoff_base_s ** max(1, attempts))


# Which queued chunk runs next: a finalized meeting's first (someone is waiting on it), then
# round-robin between meetings (the one served longest ago), oldest first within a meeting,
# so one long meeting cannot starve the others.
CLAIM_ORDER = (
    (Meeting.state == MeetingState.FINALIZING).desc(),
    Meeting.last_served_at,
    Chunk.queued_at,
    Chunk.id,
)


def _lease_free(now: Any) -> Any:
    """No worker holds the chunk, or its lease ran out before `now` (a time or a bound
    parameter)."""
    return or_(Chunk.lease_owner.is_(None), Chunk.lease_expires_at < now)


# A chunk whose carry (the words it ended inside) no job has consumed yet: the tail claim's
# candidates. Written as the partial index `ix_chunks_carry_pending` is (migration 0011), so
# that both databases read that index: without it the tail claim walked every transcribed
# chunk, 0.2-0.6 s a claim with a million of them, five times a second per idle worker and
# inside the write transaction that every upload's commit waits for on SQLite.
CARRY_PENDING = and_(Chunk.carry_done == false(), Chunk.carry_samples > 0)


# Prepared once: built per call, the statement's construction and cache key were a visible
# share of every upload's CPU (`bench/README.md`, "Many small uploads").
_MEETING_AT = PreparedStatement(select(MEETINGS).where(MEETINGS.c.id == bindparam("meeting_id")))
_CHUNK_AT = PreparedStatement(
    select(CHUNKS).where(
        CHUNKS.c.meeting_id == bindparam("meeting_id"),
        CHUNKS.c.track == bindparam("track"),
        CHUNKS.c.seq == bindparam("seq"),
    )
)


async def chunk_at(session: Transaction, meeting_id: str, track: str, seq: int) -> Chunk | None:
    """The chunk at a key (meeting, track, seq): unique, so at most one. Read with Core and
    handed back detached (as `chunk_row` does): nothing writes a chunk through the ORM, state
    changes go through `transition_chunk`."""
    found = await fetch_first(
        session, _CHUNK_AT, {"meeting_id": meeting_id, "track": track, "seq": seq}
    )
    return chunk_row(found)


async def meeting_at(session: Transaction, meeting_id: str) -> Meeting | None:
    """The meeting, read with Core and handed back detached, as `chunk_at` does a chunk: every
    chunk's creation reads its meeting, and the ORM's load cost more than the SELECT. Its state
    changes go through `transition_meeting` (a Core compare-and-set) like every other."""
    row = await fetch_first(session, _MEETING_AT, {"meeting_id": meeting_id})
    return None if row is None else detached(Meeting, row)


# A meeting and its chunk at (track, seq), if any, in one statement: every chunk's creation
# asks for both (a round trip fewer on PostgreSQL). The chunk's columns come prefixed.
_CHUNK_PREFIX = "chunk_"
_MEETING_WITH_CHUNK_AT = PreparedStatement(
    select(MEETINGS, *(column.label(_CHUNK_PREFIX + column.name) for column in CHUNKS.c))
    .select_from(
        MEETINGS.outerjoin(
            CHUNKS,
            and_(
                CHUNKS.c.meeting_id == MEETINGS.c.id,
                CHUNKS.c.track == bindparam("track"),
                CHUNKS.c.seq == bindparam("seq"),
            ),
        )
    )
    .where(MEETINGS.c.id == bindparam("meeting_id"))
)


async def meeting_and_chunk_at(
    session: Transaction, meeting_id: str, track: str, seq: int
) -> tuple[Meeting | None, Chunk | None]:
    """`meeting_at` and `chunk_at` in one SELECT, both detached as they hand them back."""
    if not is_storable_text(meeting_id):
        # From a client's tus metadata: an id with NUL names no meeting. PostgreSQL refuses
        # to look it up (a fault, 500), where SQLite answered "no such meeting".
        return None, None
    row = await fetch_first(
        session, _MEETING_WITH_CHUNK_AT, {"meeting_id": meeting_id, "track": track, "seq": seq}
    )
    if row is None:
        return None, None
    chunk = {column.name: row.pop(_CHUNK_PREFIX + column.name) for column in CHUNKS.c}
    return detached(Meeting, row), None if chunk["id"] is None else detached(Chunk, chunk)


def chunk_row(row: Mapping[str, Any] | None) -> Chunk | None:
    """A chunk read with Core, as a detached object (`storage/models.detached`). Loading it
    through the ORM (identity map, instance state) cost several times the SELECT on the
    upload hot path."""
    return None if row is None else detached(Chunk, row)


def is_gap(meeting: Meeting, track: str, seq: int) -> bool:
    """A seq finalize named that never arrived within the grace period."""
    return [track, seq] in (meeting.gaps or [])


async def ready_state_for(session: Transaction, chunk: Chunk) -> ChunkState:
    """QUEUED if the previous seq of the track is done or a gap (or this is seq 0)."""
    if chunk.seq == 0:
        return ChunkState.QUEUED
    previous = await chunk_at(session, chunk.meeting_id, chunk.track, chunk.seq - 1)
    return await ready_state_after(session, chunk, None if previous is None else previous.state)


async def ready_state_after(
    session: Transaction, chunk: Chunk, previous_state: str | None
) -> ChunkState:
    """`ready_state_for` with the state of the track's previous chunk already read (None:
    there is none), as an upload's last PATCH reads it with its own chunk."""
    if chunk.seq == 0:
        return ChunkState.QUEUED
    if previous_state is not None and ChunkState(previous_state) in CHUNK_DONE_STATES:
        return ChunkState.QUEUED
    if previous_state is None:
        meeting = await meeting_at(session, chunk.meeting_id)
        if meeting is not None and is_gap(meeting, chunk.track, chunk.seq - 1):
            return ChunkState.QUEUED
    return ChunkState.WAITING


async def promote_successor(session: Transaction, chunk: Chunk) -> None:
    """Called in the transaction that makes `chunk` done: its successor may run now."""
    successor = await chunk_at(session, chunk.meeting_id, chunk.track, chunk.seq + 1)
    if successor is not None and successor.state == ChunkState.WAITING:
        await transition_chunk(
            session, successor, ChunkState.QUEUED, event="chunk.queued", queued_at=time.time()
        )


def _is_last_of_track(meeting: Meeting, chunk: Chunk) -> bool:
    return (
        meeting.state == MeetingState.FINALIZING
        and meeting.last_seq is not None
        and meeting.last_seq.get(chunk.track) == chunk.seq
    )


async def _tail_is_due(session: Transaction, meeting: Meeting, chunk: Chunk) -> bool:
    if _is_last_of_track(meeting, chunk):
        return True
    if is_gap(meeting, chunk.track, chunk.seq + 1):
        return True
    successor = await chunk_at(session, chunk.meeting_id, chunk.track, chunk.seq + 1)
    return successor is not None and successor.state in (
        ChunkState.REJECTED,
        ChunkState.FAILED,
    )


def tail_candidates(now: float) -> Select[tuple[Chunk, Meeting]]:
    """The tail claim's read: transcribed chunks whose carry is pending, oldest first."""
    return (
        select(Chunk, Meeting)
        .join(Meeting, Meeting.id == Chunk.meeting_id)
        .where(Chunk.state == ChunkState.TRANSCRIBED, CARRY_PENDING, _lease_free(now))
        .order_by(Chunk.transcribed_at)
        .limit(50)
        .with_for_update(skip_locked=True, of=Chunk)
    )


async def _claim_tail(session: Transaction, owner: str, lease_s: float, now: float) -> Job | None:
    rows = (await session.execute(tail_candidates(now))).all()
    for chunk, meeting in rows:
        if not await _tail_is_due(session, meeting, chunk):
            continue
        result = await session.execute(
            update(Chunk)
            .where(Chunk.id == chunk.id, Chunk.carry_done == false(), _lease_free(now))
            .values(lease_owner=owner, lease_expires_at=now + lease_s)
        )
        if result.rowcount != 1:
            continue
        assert chunk.carry_path is not None and chunk.carry_start_ms is not None
        return Job(
            kind="tail",
            chunk_id=chunk.id,
            meeting_id=chunk.meeting_id,
            track=chunk.track,
            seq=chunk.seq,
            start_ms=chunk.carry_start_ms,
            upload_id=chunk.upload_id,
            owner=owner,
            flush=True,
            carry_in=Carry(
                chunk.carry_path, chunk.carry_start_ms, chunk.carry_samples, chunk.carry_state
            ),
            carry_from_chunk=chunk.id,
            language=track_language(meeting, chunk.track).language,
        )
    return None


async def _claim_chunk(session: Transaction, owner: str, lease_s: float, now: float) -> Job | None:
    rows = (
        await session.execute(
            select(Chunk, Meeting)
            .join(Meeting, Meeting.id == Chunk.meeting_id)
            .where(Chunk.state == ChunkState.QUEUED, Chunk.next_attempt_at <= now)
            .order_by(*CLAIM_ORDER)
            .limit(20)
            .with_for_update(skip_locked=True, of=Chunk)
        )
    ).all()
    for chunk, meeting in rows:
        try:
            await transition_chunk(
                session,
                chunk,
                ChunkState.TRANSCRIBING,
                event="chunk.transcribing",
                payload={"attempt": chunk.attempts + 1},
                attempts=chunk.attempts + 1,
                lease_owner=owner,
                lease_expires_at=now + lease_s,
            )
        except StaleState:
            continue
        await session.execute(
            update(Meeting).where(Meeting.id == meeting.id).values(last_served_at=now)
        )
        previous = await chunk_at(session, chunk.meeting_id, chunk.track, chunk.seq - 1)
        carry_in = None
        if (
            previous is not None
            and previous.state == ChunkState.TRANSCRIBED
            and not previous.carry_done
            and previous.carry_samples > 0
            and previous.carry_path is not None
            and previous.carry_start_ms is not None
        ):
            carry_in = Carry(
                previous.carry_path,
                previous.carry_start_ms,
                previous.carry_samples,
                previous.carry_state,
            )
        return Job(
            kind="chunk",
            chunk_id=chunk.id,
            meeting_id=chunk.meeting_id,
            track=chunk.track,
            seq=chunk.seq,
            start_ms=chunk.start_ms,
            upload_id=chunk.upload_id,
            owner=owner,
            flush=_is_last_of_track(meeting, chunk),
            carry_in=carry_in,
            carry_from_chunk=previous.id if carry_in is not None and previous else None,
            language=track_language(meeting, chunk.track).language,
        )
    return None


# What a claim could take, asked before its write transaction: two point reads (the claim
# and the carry indexes). An idle worker asks five times a second; each empty claim was a
# write transaction with two ORM queries (on SQLite, the file's write lock, which every
# upload's commit waits for): about 2 % of a core per idle worker. A superset of what the
# claims take (a carry not yet due reads as work): the claim decides. The carry's read names
# only the partial index's columns, so that SQLite cannot prefer the state index to it.
QUEUED_DUE = PreparedStatement(
    select(CHUNKS.c.id)
    .where(CHUNKS.c.state == ChunkState.QUEUED, CHUNKS.c.next_attempt_at <= bindparam("now"))
    .limit(1)
)
CARRY_CLAIMABLE = PreparedStatement(
    select(CHUNKS.c.id).where(CARRY_PENDING, _lease_free(bindparam("now"))).limit(1)
)


async def _may_claim(db: Database, now: float) -> bool:
    return (
        await db.read_first(QUEUED_DUE, {"now": now}) is not None
        or await db.read_first(CARRY_CLAIMABLE, {"now": now}) is not None
    )


async def claim_next_job(
    db: Database, owner: str, lease_s: float, now: float | None = None
) -> Job | None:
    now = time.time() if now is None else now
    if not await _may_claim(db, now):
        return None
    async with db.write() as session:
        return await _claim_tail(session, owner, lease_s, now) or await _claim_chunk(
            session, owner, lease_s, now
        )


async def extend_lease(db: Database, job: Job, lease_s: float) -> bool:
    """Heartbeat. False means the lease was lost (expired and taken): stop and discard."""
    async with db.write() as session:
        result = await session.execute(
            update(Chunk)
            .where(Chunk.id == job.chunk_id, Chunk.lease_owner == job.owner)
            .values(lease_expires_at=time.time() + lease_s)
        )
        return result.rowcount == 1


def _segment_rows(job: Job, segments: list[NewSegment]) -> list[Segment]:
    return [
        Segment(
            meeting_id=job.meeting_id,
            chunk_id=job.chunk_id,
            track=job.track,
            start_ms=s.start_ms,
            end_ms=s.end_ms,
            text=s.text,
            words=s.words_json(),
        )
        for s in segments
    ]


def _segments_payload(segments: list[NewSegment]) -> list[dict[str, Any]]:
    return [
        {
            "start": s.start_ms / 1000,
            "end": s.end_ms / 1000,
            "text": s.text,
            "words": s.words_json(),
        }
        for s in segments
    ]


async def complete_job(
    db: Database,
    job: Job,
    segments: list[NewSegment],
    carry_out: Carry | None,
    elapsed_s: float | None = None,
    detected: DetectedLanguage | None = None,
) -> bool:
    """Commit a job's segments and carry in one transaction, and the track's language if
    this job detected it. False if the lease was lost."""
    now = time.time()
    async with db.write() as session:
        chunk = await session.get(Chunk, job.chunk_id)
        if chunk is None:
            return False
        if job.kind == "tail":
            result = await session.execute(
                update(Chunk)
                .where(
                    Chunk.id == job.chunk_id,
                    Chunk.lease_owner == job.owner,
                    Chunk.carry_done == false(),
                )
                .values(carry_done=True, lease_owner=None, lease_expires_at=None)
            )
            if result.rowcount != 1:
                return False
            session.add_all(_segment_rows(job, segments))
            record_event(
                session,
                job.meeting_id,
                "chunk.tail_transcribed",
                {"track": job.track, "seq": job.seq, "segments": _segments_payload(segments)},
            )
            await _keep_language(session, job, detected)
            return True
        try:
            await transition_chunk(
                session,
                chunk,
                ChunkState.TRANSCRIBED,
                event="chunk.transcribed",
                payload={"segments": _segments_payload(segments)},
                guard=(Chunk.lease_owner == job.owner,),
                transcribed_at=now,
                transcribe_s=elapsed_s,
                lease_owner=None,
                lease_expires_at=None,
                error=None,
                carry_path=carry_out.path if carry_out else None,
                carry_start_ms=carry_out.start_ms if carry_out else None,
                carry_samples=carry_out.samples if carry_out else 0,
                carry_state=carry_out.state if carry_out else None,
                carry_done=carry_out is None,
            )
        except StaleState:
            return False
        if job.carry_from_chunk is not None:
            await session.execute(
                update(Chunk).where(Chunk.id == job.carry_from_chunk).values(carry_done=True)
            )
        session.add_all(_segment_rows(job, segments))
        await _keep_language(session, job, detected)
        await promote_successor(session, chunk)
        return True


async def _keep_language(session: Transaction, job: Job, detected: DetectedLanguage | None) -> None:
    """A detected language, kept once the job's own commit is certain (its lease held)."""
    if detected is not None and await record_detected(
        session, job.meeting_id, job.track, detected.language, detected.probability
    ):
        record_event(
            session,
            job.meeting_id,
            "track.language_detected",
            {
                "track": job.track,
                "language": detected.language,
                "probability": detected.probability,
            },
        )


async def fail_job(db: Database, job: Job, error: str, policy: RetryPolicy) -> None:
    """Record a failed attempt: back to QUEUED with backoff, or FAILED when attempts run out."""
    async with db.write() as session:
        chunk = await session.get(Chunk, job.chunk_id)
        if chunk is None:
            return
        if job.kind == "tail":
            await _release_tail(session, job, policy.delay(1))
            return
        await _retry_or_fail(session, chunk, error, policy, guard_owner=job.owner)


async def _release_tail(session: Transaction, job: Job, delay_s: float) -> bool:
    """A tail job that did not run: the carry stays due, only the lease goes, and the next
    claim may retry it after `delay_s`. False if this worker's lease was lost meanwhile."""
    result = await session.execute(
        update(Chunk)
        .where(Chunk.id == job.chunk_id, Chunk.lease_owner == job.owner)
        .values(lease_owner=None, lease_expires_at=time.time() + delay_s)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def postpone_job(db: Database, job: Job, error: str, delay_s: float) -> bool:
    """The job could not run for a reason outside its chunk (the blob store unreachable):
    back to QUEUED after `delay_s`, and the attempt its claim counted is given back, so that
    an outage longer than the retries' backoff leaves no chunk FAILED that nothing is wrong
    with. False if this worker's lease was lost meanwhile (the chunk is someone else's)."""
    async with db.write() as session:
        chunk = await session.get(Chunk, job.chunk_id)
        if chunk is None:
            return False
        if job.kind == "tail":
            return await _release_tail(session, job, delay_s)
        guard = (Chunk.lease_owner == job.owner,)
        attempts = max(0, chunk.attempts - 1)
        try:
            await transition_chunk(
                session,
                chunk,
                ChunkState.QUEUED,
                event="chunk.retrying",
                payload={"error": error, "attempts": attempts, "attempt_counted": False},
                guard=guard,
                error=error,
                attempts=attempts,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=time.time() + delay_s,
            )
        except StaleState:
            return False
        return True


async def _retry_or_fail(
    session: Transaction,
    chunk: Chunk,
    error: str,
    policy: RetryPolicy,
    guard_owner: str | None,
) -> None:
    guard = (Chunk.lease_owner == guard_owner,) if guard_owner else ()
    try:
        if chunk.attempts >= policy.max_attempts:
            await transition_chunk(
                session,
                chunk,
                ChunkState.FAILED,
                event="chunk.failed",
                payload={"error": error, "attempts": chunk.attempts},
                guard=guard,
                error=error,
                lease_owner=None,
                lease_expires_at=None,
            )
            await promote_successor(session, chunk)
        else:
            await transition_chunk(
                session,
                chunk,
                ChunkState.QUEUED,
                event="chunk.retrying",
                payload={"error": error, "attempts": chunk.attempts},
                guard=guard,
                error=error,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=time.time() + policy.delay(chunk.attempts),
            )
    except StaleState:
        pass


async def reap_expired_leases(db: Database, policy: RetryPolicy, now: float | None = None) -> int:
    """Chunk jobs whose worker stopped heartbeating go back to the queue (or to FAILED)."""
    now = time.time() if now is None else now
    expired_leases = select(Chunk).where(
        Chunk.state == ChunkState.TRANSCRIBING, Chunk.lease_expires_at < now
    )
    # Looked for outside a write transaction first: a sweep with nothing to do (nearly every
    # sweep) takes no write lock, which on SQLite every upload would wait behind.
    async with db.read() as session:
        if (await session.execute(expired_leases.limit(1))).first() is None:
            return 0
    async with db.write() as session:
        expired = (await session.execute(expired_leases)).scalars().all()
        for chunk in expired:
            await _retry_or_fail(
                session,
                chunk,
                f"lease expired (worker {chunk.lease_owner} stopped)",
                policy,
                guard_owner=chunk.lease_owner,
            )
        return len(expired)


# WAITING chunks that may be stuck: the first of their track, or the previous seq is done
# or absent (a gap, decided in Python). One indexed join, read outside any write
# transaction: a backlog holds thousands of WAITING chunks behind chunks not yet
# transcribed, and none of those is a candidate.
_PREVIOUS = CHUNKS.alias("previous")
_MAYBE_STUCK_WAITING = (
    select(CHUNKS)
    .outerjoin(
        _PREVIOUS,
        and_(
            _PREVIOUS.c.meeting_id == CHUNKS.c.meeting_id,
            _PREVIOUS.c.track == CHUNKS.c.track,
            _PREVIOUS.c.seq == CHUNKS.c.seq - 1,
        ),
    )
    .where(
        CHUNKS.c.state == ChunkState.WAITING,
        or_(
            CHUNKS.c.seq == 0,
            _PREVIOUS.c.id.is_(None),
            _PREVIOUS.c.state.in_(sorted(CHUNK_DONE_STATES)),
        ),
    )
)


async def promote_stuck_waiting(db: Database) -> int:
    """Safety net for a race under READ COMMITTED: a WAITING chunk whose predecessor is done.

    It used to load every WAITING chunk and look up each one's predecessor inside a write
    transaction, every sweep: with a backlog of 27,000 chunks that held SQLite's write lock
    long enough to slow every upload (bench/README.md, "A long-running server")."""
    async with db.read() as session:
        rows = await session.execute(_MAYBE_STUCK_WAITING)
        candidates = [detached(Chunk, row._mapping) for row in rows]
    if not candidates:
        return 0
    promoted = 0
    async with db.write() as session:
        for chunk in candidates:
            # Decided again in the write transaction; the compare-and-set skips a chunk that
            # moved since it was read.
            if await ready_state_for(session, chunk) is not ChunkState.QUEUED:
                continue
            try:
                await transition_chunk(
                    session, chunk, ChunkState.QUEUED, event="chunk.queued", queued_at=time.time()
                )
            except StaleState:
                continue
            promoted += 1
    return promoted


async def requeue_failed(session: Transaction, chunk: Chunk) -> None:
    """A user asked to retry a FAILED chunk."""
    await transition_chunk(
        session,
        chunk,
        ChunkState.QUEUED,
        event="chunk.queued",
        payload={"retry": True},
        attempts=0,
        error=None,
        next_attempt_at=0.0,
        queued_at=time.time(),
    )
