"""The language each track of a meeting is transcribed in: asked for, or detected once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from storage.models import Meeting
from storage.write_transaction import Transaction

AUTO = "auto"
LEGACY = "en"  # meetings from before languages were transcribed in English


@dataclass(frozen=True)
class TrackLanguage:
    language: str  # a code, or "auto" while an auto track has had no speech yet
    source: str  # "meeting" | "track" (asked for) | "detected"
    probability: float | None = None  # the detector's, for a detected language


def track_language(meeting: Meeting, track: str) -> TrackLanguage:
    """What a track's next job is transcribed in: a detected language is kept for the rest
    of the track (no flips chunk by chunk); else the track's own, else the meeting's."""
    detected = (meeting.detected_languages or {}).get(track)
    if detected is not None:
        return TrackLanguage(detected["language"], "detected", detected.get("probability"))
    asked = (meeting.track_languages or {}).get(track)
    if asked is not None:
        return TrackLanguage(asked, "track")
    return TrackLanguage(meeting.language or LEGACY, "meeting")


async def record_detected(
    session: Transaction, meeting_id: str, track: str, language: str, probability: float
) -> bool:
    """Keep a track's detected language, in the caller's transaction; False if the track
    already had one (the first detection stays). Tracks of one meeting detect at the same
    time, so the read-modify-write of the JSON column locks the meeting's row first, as
    storage/track_labels.py does."""
    meeting = (
        await session.execute(
            select(Meeting)
            .where(Meeting.id == meeting_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if meeting is None or track in (meeting.detected_languages or {}):
        return False
    meeting.detected_languages = {
        **(meeting.detected_languages or {}),
        track: {"language": language, "probability": probability},
    }
    return True
