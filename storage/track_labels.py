"""The label a meeting shows a track under, set by the chunks that carry one."""

from __future__ import annotations

from sqlalchemy import select

from storage.models import Meeting
from storage.write_transaction import Transaction


async def set_track_label(session: Transaction, meeting: Meeting, track: str, label: str) -> None:
    """labels[track] = label, in the caller's transaction. Two tracks' first chunks arrive
    together (a Discord channel's speakers), so the read-modify-write of the JSON column
    locks the meeting's row first: on PostgreSQL FOR UPDATE; SQLite's writers are
    serialised by BEGIN IMMEDIATE already."""
    if (meeting.track_labels or {}).get(track) == label:
        return
    locked = (
        await session.execute(
            select(Meeting)
            .where(Meeting.id == meeting.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    locked.track_labels = {**(locked.track_labels or {}), track: label}
