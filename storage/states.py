"""The states a chunk and a meeting can be in. Which moves between them are legal, and
the only code that makes them, is `storage/state_machine.py`'s."""

from __future__ import annotations

from enum import StrEnum


class ChunkState(StrEnum):
    CREATED = "created"  # upload created, no byte yet
    UPLOADING = "uploading"  # some bytes stored
    UPLOADED = "uploaded"  # every byte stored, not yet validated
    REJECTED = "rejected"  # not valid Ogg Opus; bytes kept until the upload expires
    WAITING = "waiting"  # valid, waits for the previous seq of its track
    QUEUED = "queued"  # claimable by a worker (at or after next_attempt_at)
    TRANSCRIBING = "transcribing"  # leased by a worker
    TRANSCRIBED = "transcribed"
    FAILED = "failed"  # gave up after max attempts; can be retried by hand
    CANCELLED = "cancelled"  # the incomplete upload was terminated; the key may be re-created


class MeetingState(StrEnum):
    RECORDING = "recording"
    FINALIZING = "finalizing"  # finalize received; waits for chunks and transcription
    COMPLETE = "complete"
    FAILED = "failed"
    ABANDONED = "abandoned"  # no chunk arrived within the configured time; revived by one
