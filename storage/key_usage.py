"""What an API key holds and has sent, for its limits: open meetings, webhooks, and upload
bytes accepted per UTC day. The server decides what a limit is; this module only counts.

Counts that guard a creation take the caller's write session, so the count and the insert
are one transaction: SQLite writers are serial (BEGIN IMMEDIATE), which makes the limit
exact there; on PostgreSQL (READ COMMITTED) two racing creations may both pass, so a limit
can be overshot by the number of concurrent requests, never more.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select

from storage.commit_time_writes import count_upload_bytes, utc_day
from storage.database import Database
from storage.models import KeyUploadBytes, Meeting, Webhook
from storage.prepared_statements import PreparedStatement
from storage.state_machine import MeetingState
from storage.write_transaction import Transaction


def seconds_until_next_utc_day(now: float) -> int:
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((today + timedelta(days=1)).timestamp() - now))


async def open_meetings(session: Transaction, owner: str) -> int:
    """Meetings still recording (not finalized). Finalizing, complete, failed and abandoned
    ones take no more uploads from their recorder, so they do not hold a slot."""
    return (
        await session.execute(
            select(func.count())
            .select_from(Meeting)
            .where(Meeting.owner == owner, Meeting.state == MeetingState.RECORDING)
        )
    ).scalar_one()


async def webhooks(session: Transaction, owner: str) -> int:
    return (
        await session.execute(
            select(func.count()).select_from(Webhook).where(Webhook.owner == owner)
        )
    ).scalar_one()


# Read on every upload's creation and offset (the key's daily byte limit).
_BYTES_OF_DAY = PreparedStatement(
    select(KeyUploadBytes.__table__.c.bytes).where(
        KeyUploadBytes.__table__.c.owner == bindparam("owner"),
        KeyUploadBytes.__table__.c.day == bindparam("day"),
    )
)


async def upload_bytes_today(db: Database, owner: str, now: float | None = None) -> int:
    day = utc_day(time.time() if now is None else now)
    found = await db.read_first(_BYTES_OF_DAY, {"owner": owner, "day": day})
    return 0 if found is None else found["bytes"] or 0


def add_upload_bytes(
    session: Transaction, owner: str, count: int, now: float | None = None
) -> None:
    """Count accepted bytes in the caller's transaction (the one that commits the offset). The
    row is written at the commit, as its last statement: every PATCH of a key adds to it
    (storage/commit_time_writes.py). One upsert there: two PATCHes of one key on two nodes
    must not lose each other's count."""
    if count > 0:
        count_upload_bytes(session, owner, count, time.time() if now is None else now)
