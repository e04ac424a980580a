"""Durable tus upload records: the offset in the database is the acknowledged truth."""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.database import Database
from storage.models import Chunk, Upload
from storage.state_machine import ChunkState


def new_upload_id() -> str:
    # 128 random bits, URL-safe: unguessable.
    return secrets.token_urlsafe(16)


# A chunk in one of these states is part of its meeting: its upload is kept with it. Every
# other complete upload (rejected or cancelled chunk, plain file, concatenation part or
# final that became no chunk) expires like an unfinished one.
_KEPT_WITH_MEETING = [
    s.value
    for s in (
        ChunkState.UPLOADED,
        ChunkState.WAITING,
        ChunkState.QUEUED,
        ChunkState.TRANSCRIBING,
        ChunkState.TRANSCRIBED,
        ChunkState.FAILED,
    )
]


class UploadStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def expired(self, now: float, expiry_s: float) -> list[Upload]:
        """Uploads past their expiry that no meeting keeps. Rows written before finals had
        an expiry count from their creation."""
        kept = (
            select(Chunk.id)
            .where(Chunk.upload_id == Upload.id, Chunk.state.in_(_KEPT_WITH_MEETING))
            .exists()
        )
        async with self.db.read() as session:
            rows = await session.execute(
                select(Upload).where(
                    Upload.terminated_at.is_(None),
                    func.coalesce(Upload.expires_at, Upload.created_at + expiry_s) < now,
                    ~kept,
                )
            )
            return list(rows.scalars().all())

    async def mark_terminated(self, upload_id: str, now: float) -> None:
        async with self.db.write() as session:
            await session.execute(
                update(Upload).where(Upload.id == upload_id).values(terminated_at=now)
            )

    async def get(self, upload_id: str) -> Upload | None:
        async with self.db.read() as session:
            return await session.get(Upload, upload_id)

    @staticmethod
    async def commit_offset(
        session: AsyncSession, upload_id: str, old: int, new: int, expires_at: float | None
    ) -> bool:
        """Move the offset (compare-and-set), in the caller's transaction. Progress also
        pushes the expiry back: an upload expires when it stops moving, not while sent."""
        result = await session.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.offset == old)
            .values(offset=new, expires_at=expires_at)
        )
        return result.rowcount == 1

    async def set_length(self, upload_id: str, length: int) -> bool:
        async with self.db.write() as session:
            result = await session.execute(
                update(Upload)
                .where(Upload.id == upload_id, Upload.length.is_(None))
                .values(length=length)
            )
            return result.rowcount == 1

    async def terminate(self, upload_id: str) -> None:
        async with self.db.write() as session:
            await session.execute(
                update(Upload).where(Upload.id == upload_id).values(terminated_at=time.time())
            )


def make_upload(
    *,
    upload_id: str,
    length: int | None,
    meta: dict[str, Any],
    concat: str | None,
    concat_parts: list[str] | None,
    expires_at: float | None,
    owner: str = "",
) -> Upload:
    return Upload(
        id=upload_id,
        owner=owner,
        length=length,
        offset=0,
        meta=meta,
        concat=concat,
        concat_parts=concat_parts,
        created_at=time.time(),
        expires_at=expires_at,
    )
