"""Turns tus uploads into meeting chunks: registers the chunk key at creation, moves the
chunk through its upload states, validates completed bytes as Ogg Opus and queues them.

The upload store (`storage/upload_store.py`) calls it inside the transactions that create
an upload and commit its offset, so a chunk's state never disagrees with its upload's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Table, and_, bindparam, insert, select, update

from codec.errors import InvalidOpusError
from codec.validation_pool import ValidationPool
from storage.blob_store import BlobStore
from storage.database import Database
from storage.field_rules import (
    MAX_TRACK_CHARS,
    MAX_TRACK_LABEL_CHARS,
    ascii_int,
    is_track_label,
    is_track_name,
)
from storage.job_queue import (
    chunk_row,
    is_gap,
    meeting_and_chunk_at,
    promote_successor,
    ready_state_after,
    ready_state_for,
)
from storage.models import Chunk, Upload
from storage.prepared_statements import PreparedStatement, fetch_first, write
from storage.refusals import Refused, Rule
from storage.state_machine import (
    CHUNKS,
    ChunkState,
    Hop,
    MeetingState,
    StaleState,
    new_chunk_values,
    transition_chunk,
    transition_chunk_through,
    transition_meeting,
)
from storage.track_labels import set_track_label
from storage.write_transaction import Transaction

CHUNK_KEYS = ("meeting_id", "track", "seq", "start_ms")
UPLOADS: Table = Upload.__table__  # type: ignore[assignment]
# Prepared once (as job_queue.chunk_at): every PATCH looks its chunk up, every POST inserts one.
# With the chunk, the state of its track's previous chunk (NULL: none), from which the last
# PATCH decides queued or waiting: in the same statement, a round trip fewer on PostgreSQL.
_PREVIOUS = CHUNKS.alias("previous_chunk")
_CHUNK_OF_UPLOAD = PreparedStatement(
    select(CHUNKS, _PREVIOUS.c.state.label("previous_state"))
    .select_from(
        CHUNKS.outerjoin(
            _PREVIOUS,
            and_(
                _PREVIOUS.c.meeting_id == CHUNKS.c.meeting_id,
                _PREVIOUS.c.track == CHUNKS.c.track,
                _PREVIOUS.c.seq == CHUNKS.c.seq - 1,
            ),
        )
    )
    .where(CHUNKS.c.upload_id == bindparam("upload_id"))
)
_INSERT_CHUNK = PreparedStatement(insert(CHUNKS))
# A chunk in one of these states was accepted: its upload is kept with the meeting.
_PAST_VALIDATION = frozenset(
    {
        ChunkState.WAITING,
        ChunkState.QUEUED,
        ChunkState.TRANSCRIBING,
        ChunkState.TRANSCRIBED,
        ChunkState.FAILED,
    }
)
MAX_SEQ = 10_000_000
MAX_START_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Verdict:
    """What validation said of a completed chunk's bytes."""

    error: str | None
    duration_s: float | None


@dataclass(frozen=True)
class ChunkKey:
    meeting_id: str
    track: str
    seq: int
    start_ms: int
    label: str | None = None  # what transcripts show the track as ("track_label")


def _int_field(meta: dict[str, str | None], key: str, maximum: int) -> int:
    raw = meta.get(key)
    value = ascii_int(raw, maximum)
    if value is None:
        raise Refused(
            Rule.CHUNK_METADATA,
            f"{key} must be a non-negative integer of ASCII digits, at most {maximum};"
            f" got {(raw or '')[:20]!r}",
        )
    return value


def parse_chunk_key(meta: dict[str, str | None]) -> ChunkKey | None:
    """None for an upload that is not a meeting chunk (any tus client may still upload)."""
    present = [k for k in CHUNK_KEYS if k in meta]
    if not present:
        return None
    missing = [k for k in CHUNK_KEYS if k not in meta]
    if missing:
        raise Refused(Rule.CHUNK_METADATA, f"missing {', '.join(missing)}")
    meeting_id = meta["meeting_id"] or ""
    track = meta["track"] or ""
    if not meeting_id:
        raise Refused(Rule.CHUNK_METADATA, "meeting_id is empty")
    if not is_track_name(track):
        raise Refused(
            Rule.CHUNK_METADATA, f"track must be 1 to {MAX_TRACK_CHARS} printable characters"
        )
    label = meta.get("track_label")
    if "track_label" in meta and not is_track_label(label):  # a key without a value too
        raise Refused(
            Rule.CHUNK_METADATA,
            f"track_label must be 1 to {MAX_TRACK_LABEL_CHARS} printable characters, not all blank",
        )
    return ChunkKey(
        meeting_id=meeting_id,
        track=track,
        seq=_int_field(meta, "seq", MAX_SEQ),
        start_ms=_int_field(meta, "start_ms", MAX_START_MS),
        label=label,
    )


async def mark_kept(session: Transaction, upload_id: str, kept: bool) -> None:
    """Whether the upload is part of its meeting (`Upload.kept_with_meeting`): the expiry
    sweep leaves it alone."""
    await session.execute(
        update(UPLOADS).where(UPLOADS.c.id == upload_id).values(kept_with_meeting=kept)
    )


class ExistingUpload(Exception):
    """Creation resolved to an upload that already exists (a resumed chunk): answer with it."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(upload_id)
        self.upload_id = upload_id


class ChunkIntake:
    """What uploads mean to meetings: the upload store's hooks for meeting chunks."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        validation: ValidationPool,
        max_chunk_s: float = 600.0,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.validation = validation
        self.max_chunk_s = max_chunk_s

    async def on_create(self, session: Transaction, upload: Upload) -> None:
        if upload.concat == "partial":
            return  # the final upload of a concatenation carries the chunk key
        key = parse_chunk_key(upload.meta)
        if key is None:
            return
        meeting, existing = await meeting_and_chunk_at(session, key.meeting_id, key.track, key.seq)
        if meeting is None or meeting.owner != upload.owner:
            raise Refused(Rule.MEETING_NOT_FOUND, key.meeting_id)
        if meeting.tracks and key.track not in meeting.tracks:
            raise Refused(Rule.UNKNOWN_TRACK, f"{key.track!r}; declared: {meeting.tracks}")
        if existing is not None and existing.state != ChunkState.CANCELLED:
            previous = await session.get(Upload, existing.upload_id)
            if (
                previous is not None
                and previous.length is not None
                and upload.length is not None
                and previous.length != upload.length
            ):
                raise Refused(
                    Rule.CHUNK_LENGTH_CONFLICT,
                    f"stored upload has {previous.length} bytes, request says {upload.length}",
                )
            raise ExistingUpload(existing.upload_id)
        if meeting.state == MeetingState.COMPLETE:
            raise Refused(Rule.MEETING_CLOSED, f"meeting {meeting.id}")
        if is_gap(meeting, key.track, key.seq):
            raise Refused(
                Rule.SEQ_AFTER_FINALIZE,
                f"seq {key.seq} of {key.track!r} was given up as missing after the grace period",
            )
        if meeting.state == MeetingState.ABANDONED:
            # A chunk for a meeting given up as abandoned: the recorder is alive after all.
            await transition_meeting(
                session, meeting, MeetingState.RECORDING, event="meeting.revived"
            )
        if meeting.state != MeetingState.RECORDING:
            last = (meeting.last_seq or {}).get(key.track)
            if last is None or key.seq > last:
                raise Refused(
                    Rule.SEQ_AFTER_FINALIZE,
                    f"meeting is {meeting.state}; last seq of {key.track!r} is {last}",
                )
        if key.label is not None:  # the latest chunk's label wins: a renamed speaker
            await set_track_label(session, meeting, key.track, key.label)
        if existing is not None:
            # A terminated, incomplete upload of this key: the client starts it again.
            await transition_chunk(
                session,
                existing,
                ChunkState.CREATED,
                event="chunk.created",
                upload_id=upload.id,
                start_ms=key.start_ms,
                error=None,
            )
            return
        await write(
            session,
            _INSERT_CHUNK,
            new_chunk_values(
                meeting_id=key.meeting_id,
                track=key.track,
                seq=key.seq,
                start_ms=key.start_ms,
                upload_id=upload.id,
            ),
        )

    async def _chunk_with_previous_state(
        self, session: Transaction, upload_id: str
    ) -> tuple[Chunk | None, str | None]:
        """The upload's chunk, and the state of its track's previous chunk (None: none)."""
        row = await fetch_first(session, _CHUNK_OF_UPLOAD, {"upload_id": upload_id})
        if row is None:
            return None, None
        previous_state = row.pop("previous_state")
        return chunk_row(row), previous_state

    async def _chunk_for(self, session: Transaction, upload_id: str) -> Chunk | None:
        return (await self._chunk_with_previous_state(session, upload_id))[0]

    async def on_progress(self, session: Transaction, upload: Upload) -> None:
        chunk = await self._chunk_for(session, upload.id)
        if chunk is not None and chunk.state == ChunkState.CREATED:
            await transition_chunk(session, chunk, ChunkState.UPLOADING)

    async def inspect(self, upload: Upload) -> Verdict | None:
        """Validates a completed chunk's bytes as Ogg Opus, in a worker process."""
        if upload.concat == "partial" or parse_chunk_key(upload.meta) is None:
            return None
        return await self._verdict(upload.id)

    async def _verdict(self, upload_id: str) -> Verdict:
        try:
            async with self.blobs.local_copy(upload_id) as path:
                info = await self.validation.validate(path)
        except InvalidOpusError as exc:
            return Verdict(str(exc), None)
        if info.duration_s > self.max_chunk_s:
            return Verdict(
                f"the chunk holds {info.duration_s:.1f} s of audio; at most "
                f"{self.max_chunk_s:g} s are accepted (--max-chunk-seconds)",
                None,
            )
        return Verdict(None, info.duration_s)

    @staticmethod
    def keeps(verdict: object) -> bool:
        """Valid bytes of a chunk: the chunk goes to queued or waiting, and its upload stays
        with the meeting."""
        return isinstance(verdict, Verdict) and verdict.error is None

    async def on_complete(self, session: Transaction, upload: Upload, verdict: object) -> bool:
        """uploading -> uploaded -> queued / waiting / rejected, in the offset's transaction.
        True when the chunk is past validation and kept with its meeting."""
        chunk, previous_state = await self._chunk_with_previous_state(session, upload.id)
        if chunk is None:
            return False
        if chunk.state in (ChunkState.CREATED, ChunkState.UPLOADING):
            hops = [
                Hop(
                    ChunkState.UPLOADED,
                    "chunk.uploaded",
                    {"bytes": upload.offset},
                    {"bytes": upload.offset, "uploaded_at": time.time()},
                )
            ]
            if isinstance(verdict, Verdict) and verdict.error is None:
                # Valid bytes: on to queued or waiting in the same UPDATE (the usual upload).
                target = await ready_state_after(session, chunk, previous_state)
                hops.append(self._ready_hop(target, verdict))
            try:
                await transition_chunk_through(session, chunk, hops)
            except StaleState:
                # The chunk moved meanwhile (cancelled): the bytes are still recorded, and
                # recovery settles the chunk from what the database then says.
                return False
        if isinstance(verdict, Verdict) and chunk.state == ChunkState.UPLOADED:
            await self._apply(session, chunk, verdict)
        return chunk.state in _PAST_VALIDATION

    async def settle_unfinished(self) -> None:
        """Recovery: chunks whose upload completed but whose chunk did not hear of it (a
        crash between the offset's commit and the chunk's transition), and uploaded chunks
        nobody validated."""
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(Chunk, Upload)
                    .join(Upload, Upload.id == Chunk.upload_id)
                    .where(
                        Chunk.state.in_(
                            [
                                ChunkState.CREATED,
                                ChunkState.UPLOADING,
                                ChunkState.UPLOADED,
                            ]
                        )
                    )
                )
            ).all()
        for chunk, upload in rows:
            if chunk.state == ChunkState.UPLOADED:
                await self.validate(chunk.id)
            elif upload.length is not None and upload.offset == upload.length:
                await self.settle_complete(upload)

    async def settle_complete(self, upload: Upload) -> None:
        """Recovery: every byte arrived but the crash came before the chunk heard of it."""
        verdict = await self.inspect(upload)
        async with self.db.write() as session:
            if await self.on_complete(session, upload, verdict):
                await mark_kept(session, upload.id, True)

    async def validate(self, chunk_id: int) -> None:
        """UPLOADED -> QUEUED / WAITING / REJECTED. Safe to repeat (restart recovery calls it)."""
        async with self.db.read() as session:
            chunk = await session.get(Chunk, chunk_id)
        if chunk is None or chunk.state != ChunkState.UPLOADED:
            return
        verdict = await self._verdict(chunk.upload_id)
        async with self.db.write() as session:
            chunk = await session.get(Chunk, chunk_id)
            if chunk is not None and chunk.state == ChunkState.UPLOADED:
                await self._apply(session, chunk, verdict)

    @staticmethod
    def _ready_hop(target: ChunkState, verdict: Verdict) -> Hop:
        """uploaded -> queued (its track's previous chunk is done) or waiting (`target`)."""
        return Hop(
            target,
            f"chunk.{target.value}",
            {"duration_s": verdict.duration_s},
            {"duration_s": verdict.duration_s, "queued_at": time.time()},
        )

    async def _apply(self, session: Transaction, chunk: Chunk, verdict: Verdict) -> None:
        try:
            if verdict.error is not None:
                await transition_chunk(
                    session,
                    chunk,
                    ChunkState.REJECTED,
                    event="chunk.rejected",
                    payload={"error": verdict.error},
                    error=f"not valid Ogg Opus: {verdict.error}",
                )
                await promote_successor(session, chunk)
                return
            await transition_chunk_through(
                session, chunk, [self._ready_hop(await ready_state_for(session, chunk), verdict)]
            )
        except StaleState:
            return

    async def on_expire(self, upload: Upload) -> None:
        async with self.db.write() as session:
            chunk = await self._chunk_for(session, upload.id)
            if chunk is not None and chunk.state in (
                ChunkState.CREATED,
                ChunkState.UPLOADING,
            ):
                await transition_chunk(
                    session,
                    chunk,
                    ChunkState.CANCELLED,
                    event="chunk.expired",
                    payload={"bytes_reclaimed": upload.offset},
                    error="upload expired before it completed; upload the chunk again",
                )

    async def on_terminate(self, session: Transaction, upload: Upload) -> None:
        chunk = await self._chunk_for(session, upload.id)
        if chunk is None:
            return
        if chunk.state not in (ChunkState.CREATED, ChunkState.UPLOADING):
            raise Refused(Rule.UPLOAD_ACCEPTED, f"chunk is {chunk.state}")
        await transition_chunk(session, chunk, ChunkState.CANCELLED, event="chunk.cancelled")
