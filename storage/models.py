"""SQLAlchemy models: meetings, uploads, chunks, segments and the durable event log.

Timestamps are float epoch seconds: the same arithmetic works in SQLite and PostgreSQL
without dialect-specific date functions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect, RowMapping
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.states import ChunkState, MeetingState


class _StateColumn(TypeDecorator[StrEnum]):
    """A state column: stored as its value (VARCHAR(20), as ever), read back as the enum
    member, and a write of anything that is not a state fails before it reaches SQL."""

    impl = String(20)
    cache_ok = True

    def __init__(self, states: type[StrEnum]) -> None:
        super().__init__()
        self.states = states

    def process_bind_param(self, value: object, dialect: Dialect) -> str | None:
        return None if value is None else self.states(value).value

    def process_result_value(self, value: object, dialect: Dialect) -> StrEnum | None:
        return None if value is None else self.states(value)


class Base(DeclarativeBase):
    pass


M = TypeVar("M", bound=Base)


def detached(model: type[M], row: RowMapping) -> M:
    """A row read with Core, as an object of its mapped class that no session holds.

    The constructor sets each column through its instrumented attribute (an event and a
    history entry each): 29 us for a chunk's 24 columns, where this takes 1.6. It is what the
    ORM's own loading does (an instance from the class manager, its dict filled in), so the
    object reads, and takes `set_committed_value`, as a loaded one would. Several such objects
    are built on every upload (its upload, meeting and chunks)."""
    instance: M = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    instance.__dict__.update(row)
    return instance


class Meeting(Base):
    __tablename__ = "meetings"
    __table_args__ = (UniqueConstraint("owner", "external_id", name="uq_meeting_external_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The API key (its fingerprint) that created the meeting; "" when no keys are configured.
    owner: Mapped[str] = mapped_column(String(64), default="", index=True)
    external_id: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(500))
    # Declared tracks; an empty list accepts any track (Discord users who join late).
    tracks: Mapped[list[str]] = mapped_column(JSON, default=list)
    # {"track": "label"}: the name a track is shown under in transcripts (None: none yet).
    track_labels: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # The language the meeting's tracks are transcribed in: "auto" (each track detects its
    # own) or a code; None on meetings from before languages, which were English.
    language: Mapped[str | None] = mapped_column(String(16))
    # {"track": "de"}: a track's language where the meeting named one (else `language`).
    track_languages: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # {"track": {"language": "de", "probability": 0.93}}: found once per `auto` track, from
    # its first speech, and kept for the rest of the track (storage/track_languages.py).
    detected_languages: Mapped[dict[str, dict[str, Any]] | None] = mapped_column(JSON)
    state: Mapped[MeetingState] = mapped_column(_StateColumn(MeetingState), index=True)
    # {"track": last_seq} as given to finalize; None while recording.
    last_seq: Mapped[dict[str, int] | None] = mapped_column(JSON)
    # Chunk keys finalize named that never arrived within the grace period: [[track, seq]].
    gaps: Mapped[list[list[Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    finalized_at: Mapped[float | None] = mapped_column(Double)
    completed_at: Mapped[float | None] = mapped_column(Double)
    # When a worker last claimed one of its chunks: round-robin between meetings.
    last_served_at: Mapped[float] = mapped_column(Double, default=0.0)


class Upload(Base):
    """One tus upload. Its bytes live in the blob store under the same id."""

    __tablename__ = "uploads"
    __table_args__ = (
        # What the expiry sweep reads: uploads neither terminated nor kept with a meeting
        # (unfinished ones, and complete ones that became no accepted chunk). Without it,
        # every sweep probed every upload ever kept: 478 ms each 2 s with a million chunks.
        Index(
            "ix_uploads_expiring",
            "expires_at",
            sqlite_where=text("terminated_at IS NULL AND kept_with_meeting = 0"),
            postgresql_where=text("terminated_at IS NULL AND NOT kept_with_meeting"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="")
    # BIGINT: uploads pass 2 GiB (PostgreSQL's INTEGER is 32 bits).
    length: Mapped[int | None] = mapped_column(BigInteger)  # None while deferred
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    # Raw tus metadata, values decoded to str (None for a key without value).
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    concat: Mapped[str | None] = mapped_column(String(10))  # None | "partial" | "final"
    concat_parts: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float | None] = mapped_column(Double)
    terminated_at: Mapped[float | None] = mapped_column(Double)
    # Its chunk passed validation and is part of its meeting: the upload never expires (it
    # goes with the meeting). Set in the transaction that records the last bytes.
    kept_with_meeting: Mapped[bool] = mapped_column(Boolean, default=False)
    # A PATCH on another node found this upload locked by a stalled writer and asks it to
    # stop (the in-process takeover signal cannot cross nodes).
    takeover_at: Mapped[float | None] = mapped_column(Double)


class Chunk(Base):
    """One rolling segment of one track; also the transcription job (the row is the queue)."""

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("meeting_id", "track", "seq", name="uq_chunk_key"),
        Index("ix_chunks_claim", "state", "next_attempt_at"),
        # The most recent transcription times (admission's real-time factor).
        Index("ix_chunks_transcribed_at", "transcribed_at"),
        # Each live meeting's newest upload (the backlog's per-meeting lag).
        Index("ix_chunks_meeting_uploaded", "meeting_id", "uploaded_at"),
        # The carries no job has consumed yet (the tail claim, storage/job_queue.py): a few
        # rows, where the transcribed chunks they are among may be millions.
        Index(
            "ix_chunks_carry_pending",
            "transcribed_at",
            sqlite_where=text("carry_done = 0 AND carry_samples > 0"),
            postgresql_where=text("NOT carry_done AND carry_samples > 0"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No index of its own: it leads uq_chunk_key and ix_chunks_meeting_uploaded, which serve
    # every read by meeting (and the foreign key's checks); a third index on it only cost
    # each chunk's INSERT and state change another entry.
    meeting_id: Mapped[str] = mapped_column(ForeignKey("meetings.id"))
    track: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(Integer)
    start_ms: Mapped[int] = mapped_column(Integer)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), unique=True)
    state: Mapped[ChunkState] = mapped_column(_StateColumn(ChunkState))
    error: Mapped[str | None] = mapped_column(Text)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Double)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Double, default=0.0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[float] = mapped_column(Double)
    uploaded_at: Mapped[float | None] = mapped_column(Double)
    queued_at: Mapped[float | None] = mapped_column(Double)
    transcribed_at: Mapped[float | None] = mapped_column(Double)
    transcribe_s: Mapped[float | None] = mapped_column(Double)  # wall time of the last job
    # Audio after the last pause, handed to the next chunk of the track (or flushed at the end).
    carry_path: Mapped[str | None] = mapped_column(String(500))
    carry_start_ms: Mapped[int | None] = mapped_column(Integer)
    carry_samples: Mapped[int] = mapped_column(Integer, default=0)
    # What the decoder knew when it stopped (opaque here: the worker writes and reads it).
    carry_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # True once the carry was consumed by the successor's job or flushed (or there is none).
    carry_done: Mapped[bool] = mapped_column(Boolean, default=False)


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_meeting_time", "meeting_id", "start_ms"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meeting_id: Mapped[str] = mapped_column(ForeignKey("meetings.id"))
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id"), index=True)
    track: Mapped[str] = mapped_column(String(200))
    start_ms: Mapped[int] = mapped_column(Integer)
    end_ms: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    # [{"start": s, "end": s, "word": str, "probability": p}], absolute meeting seconds.
    words: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class Event(Base):
    """Durable, ordered log of what happened to a meeting: SSE replay reads it."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_meeting", "meeting_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meeting_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)


class Webhook(Base):
    """A downstream subscriber. `cursor`: the last event id fanned out to its deliveries."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), default="", index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(JSON)
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Double)


class Delivery(Base):
    """One event for one webhook: the outbox row, kept after delivery or dead-lettering."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id", name="uq_delivery"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    meeting_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12))  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Double, default=0.0)
    lease_until: Mapped[float] = mapped_column(Double, default=0.0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    delivered_at: Mapped[float | None] = mapped_column(Double)


class KeyUploadBytes(Base):
    """Upload bytes an API key (its owner fingerprint, "" without keys) had accepted on one UTC
    day: the per-key daily quota reads it. Counted as bytes are committed, so bytes accepted
    today count today, whenever their upload was created."""

    __tablename__ = "key_upload_bytes"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # "YYYY-MM-DD", UTC
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class MetricRollup(Base):
    """A histogram of /metrics kept as it grows: each observation adds to every bucket at or
    above it, in the transaction that makes it (a chunk transcribed, a meeting complete), so
    a scrape reads a few rows however many chunks there are (storage/metric_rollups.py)."""

    __tablename__ = "metric_rollups"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    le: Mapped[float] = mapped_column(Double, primary_key=True)  # upper bound; 1e308: +Inf
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    sum: Mapped[float] = mapped_column(Double, default=0.0)  # of the values counted here


class ChunkStateCount(Base):
    """How many chunks were in a state when the deltas were last folded in (triggers on
    `chunks` append the changes since to `chunk_state_deltas`: storage/chunk_state_counts.py)."""

    __tablename__ = "chunk_state_counts"

    state: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class ChunkStateDelta(Base):
    __tablename__ = "chunk_state_deltas"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(20))
    delta: Mapped[int] = mapped_column(SmallInteger)


# Every mapped class is above: their mappers are configured here, at import. `detached`
# builds objects without the constructor, which is what configured them on first use; a
# process whose first object came from `detached` found its attributes not set up.
configure_mappers()
