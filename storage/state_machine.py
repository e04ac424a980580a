"""The chunk and meeting state machines: the only code that writes a `state` column.

Every transition is a compare-and-set (`UPDATE ... WHERE id = ? AND state = ?`), so two
processes racing on one row cannot both win, and each writes its event row in the same
transaction as the state change: the event log never shows a change that was rolled back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, update
from sqlalchemy.orm.attributes import set_committed_value

from storage.commit_time_writes import log_event
from storage.metric_rollups import observe
from storage.models import Chunk, Meeting
from storage.prepared_statements import PreparedStatement, write
from storage.states import ChunkState, MeetingState
from storage.write_transaction import Transaction

# Transitions write through the tables (Core), not the mapped classes: an ORM-enabled
# UPDATE runs the ORM's bulk-update machinery around the same statement, which showed up in
# the profile of many small uploads (every upload makes two transitions).
CHUNKS: Table = Chunk.__table__  # type: ignore[assignment]
MEETINGS: Table = Meeting.__table__  # type: ignore[assignment]

# Built once: the SET clause is the execution's other parameters (a column each), and the
# compiled form is cached per set of columns. Building the statement per call cost about six
# times executing it (bench/README.md, "Many small uploads").
_CHUNK_TRANSITION = PreparedStatement(
    update(CHUNKS).where(CHUNKS.c.id == bindparam("_id"), CHUNKS.c.state == bindparam("_current"))
)
_MEETING_TRANSITION = PreparedStatement(
    update(MEETINGS).where(
        MEETINGS.c.id == bindparam("_id"), MEETINGS.c.state == bindparam("_current")
    )
)

CHUNK_TRANSITIONS: dict[ChunkState, frozenset[ChunkState]] = {
    ChunkState.CREATED: frozenset(
        {ChunkState.UPLOADING, ChunkState.UPLOADED, ChunkState.CANCELLED}
    ),
    ChunkState.UPLOADING: frozenset({ChunkState.UPLOADED, ChunkState.CANCELLED}),
    ChunkState.UPLOADED: frozenset({ChunkState.REJECTED, ChunkState.WAITING, ChunkState.QUEUED}),
    ChunkState.WAITING: frozenset({ChunkState.QUEUED}),
    ChunkState.QUEUED: frozenset({ChunkState.TRANSCRIBING}),
    # Back to QUEUED: a retry after an error, or a lease that expired (worker died).
    ChunkState.TRANSCRIBING: frozenset(
        {ChunkState.TRANSCRIBED, ChunkState.QUEUED, ChunkState.FAILED}
    ),
    ChunkState.FAILED: frozenset({ChunkState.QUEUED}),
    ChunkState.CANCELLED: frozenset({ChunkState.CREATED}),
    ChunkState.REJECTED: frozenset(),
    ChunkState.TRANSCRIBED: frozenset(),
}

# A chunk in one of these states no longer holds up its track: the next seq may run.
# REJECTED and FAILED break the carry: the successor starts fresh.
CHUNK_DONE_STATES: frozenset[ChunkState] = frozenset(
    {ChunkState.TRANSCRIBED, ChunkState.REJECTED, ChunkState.FAILED}
)

MEETING_TRANSITIONS: dict[MeetingState, frozenset[MeetingState]] = {
    MeetingState.RECORDING: frozenset({MeetingState.FINALIZING, MeetingState.ABANDONED}),
    MeetingState.ABANDONED: frozenset({MeetingState.RECORDING}),
    MeetingState.FINALIZING: frozenset({MeetingState.COMPLETE, MeetingState.FAILED}),
    MeetingState.FAILED: frozenset({MeetingState.FINALIZING}),
    MeetingState.COMPLETE: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot go from {current!r} to {target!r}")
        self.current = current
        self.target = target


class StaleState(Exception):
    """The row changed under us (another process won the race): re-read and decide again."""


def record_event(
    session: Transaction, meeting_id: str, type_: str, payload: dict[str, Any]
) -> None:
    """Logs an event in the session's transaction: its row is inserted at the commit, with
    the transaction's other events in one statement (storage/commit_time_writes.py)."""
    log_event(session, meeting_id, type_, payload)


@dataclass(frozen=True)
class Hop:
    """One transition of a chunk: the state it goes to, its event, and the columns it sets."""

    target: ChunkState
    event: str | None = None
    payload: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)


async def transition_chunk(
    session: Transaction,
    chunk: Chunk,
    target: ChunkState,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    guard: Sequence[ColumnElement[bool]] = (),
    **fields: Any,
) -> None:
    """Move `chunk` to `target` (plus other column values) if legal and nobody moved it first.

    `guard` adds conditions to the compare-and-set, e.g. that the caller still holds the lease.
    """
    await transition_chunk_through(session, chunk, [Hop(target, event, payload, fields)], guard)


async def transition_chunk_through(
    session: Transaction,
    chunk: Chunk,
    hops: Sequence[Hop],
    guard: Sequence[ColumnElement[bool]] = (),
) -> None:
    """Transitions one after another in one compare-and-set: each hop must be legal from the
    state before it, the row is written once (the last state, every hop's columns) on the
    condition that it still holds the first, and each hop's event is logged, in order. A
    chunk that passes through a state inside one transaction (uploaded, on its way to queued
    as its upload completes) costs one UPDATE, not one per hop."""
    if not hops:
        raise ValueError("no transition to make")
    current = ChunkState(chunk.state)
    state = current
    values: dict[str, Any] = {}
    for hop in hops:
        if hop.target not in CHUNK_TRANSITIONS[state]:
            raise IllegalTransition("chunk", state, hop.target)
        if "state" in hop.fields:
            raise ValueError("pass the target state as `target`")
        values.update(hop.fields)
        state = hop.target
    if guard:
        statement = (
            update(CHUNKS)
            .where(CHUNKS.c.id == chunk.id, CHUNKS.c.state == current, *guard)
            .values(state=state, **values)
        )
        matched = (await session.execute(statement)).rowcount  # type: ignore[attr-defined]
    else:
        matched = await write(
            session,
            _CHUNK_TRANSITION,
            {"_id": chunk.id, "_current": current, "state": state, **values},
        )
    if matched != 1:
        raise StaleState(f"chunk {chunk.id} is no longer {current.value!r}")
    # What the row now holds, as loaded: marked as changed, the session would write the same
    # values again in a second UPDATE at flush.
    set_committed_value(chunk, "state", state)
    for name, value in values.items():
        set_committed_value(chunk, name, value)
    if state is ChunkState.TRANSCRIBED:
        await _observe_transcribed(session, chunk)
    for hop in hops:
        if hop.event is not None:
            body = {"track": chunk.track, "seq": chunk.seq, "state": hop.target.value}
            body.update(hop.payload or {})
            record_event(session, chunk.meeting_id, hop.event, body)


async def transition_meeting(
    session: Transaction,
    meeting: Meeting,
    target: MeetingState,
    *,
    event: str | None = None,
    payload: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    current = MeetingState(meeting.state)
    if target not in MEETING_TRANSITIONS[current]:
        raise IllegalTransition("meeting", current, target)
    matched = await write(
        session,
        _MEETING_TRANSITION,
        {"_id": meeting.id, "_current": current, "state": target, **fields},
    )
    if matched != 1:
        raise StaleState(f"meeting {meeting.id} is no longer {current.value!r}")
    set_committed_value(meeting, "state", target)
    for name, value in fields.items():
        set_committed_value(meeting, name, value)
    if target is MeetingState.COMPLETE and meeting.finalized_at and meeting.completed_at:
        await observe(session, "meeting_end_s", meeting.completed_at - meeting.finalized_at)
    if event is not None:
        body = {"state": target.value}
        body.update(payload or {})
        record_event(session, meeting.id, event, body)


async def _observe_transcribed(session: Transaction, chunk: Chunk) -> None:
    """The histograms of /metrics, in the transaction that records the transcription."""
    if chunk.transcribe_s is not None and chunk.duration_s:
        await observe(session, "transcription_rtf", chunk.transcribe_s / chunk.duration_s)
    if chunk.uploaded_at is not None and chunk.transcribed_at is not None:
        await observe(session, "chunk_lag_s", chunk.transcribed_at - chunk.uploaded_at)


def new_chunk_values(
    *, meeting_id: str, track: str, seq: int, start_ms: int, upload_id: str
) -> dict[str, Any]:
    """A chunk row's values at birth, in CREATED; the only place a chunk's state is born.
    (Columns left out stay NULL: a JSON column given None would hold JSON's null instead.)"""
    return {
        "meeting_id": meeting_id,
        "track": track,
        "seq": seq,
        "start_ms": start_ms,
        "upload_id": upload_id,
        "state": ChunkState.CREATED,
        "created_at": time.time(),
        "attempts": 0,
        "next_attempt_at": 0.0,
        "carry_samples": 0,
        "carry_done": False,
    }


def new_chunk(*, meeting_id: str, track: str, seq: int, start_ms: int, upload_id: str) -> Chunk:
    """The same, as an object to add to a session."""
    return Chunk(
        **new_chunk_values(
            meeting_id=meeting_id, track=track, seq=seq, start_ms=start_ms, upload_id=upload_id
        )
    )


def new_meeting(
    *,
    meeting_id: str,
    external_id: str | None,
    title: str | None,
    tracks: list[str],
    owner: str = "",
    track_labels: dict[str, str] | None = None,
    language: str = "en",
    track_languages: dict[str, str] | None = None,
) -> Meeting:
    return Meeting(
        language=language,
        track_languages=track_languages,
        id=meeting_id,
        owner=owner,
        external_id=external_id,
        title=title,
        tracks=tracks,
        track_labels=track_labels,
        gaps=[],
        last_served_at=0.0,
        state=MeetingState.RECORDING,
        created_at=time.time(),
    )
