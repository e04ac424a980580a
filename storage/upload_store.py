"""The tus handler's store, as tusd's handler has its DataStore: create, write (the blob
store's writer), commit offset, declare length, finish, terminate and concatenate. Locks are
`storage/upload_locks.py`'s.

The offset in the database is the acknowledged truth. What uploads mean to meetings (the
chunk intake) runs inside the same transactions, so the handler never sees a session and
a chunk's state never disagrees with its upload's.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Protocol

from sqlalchemy import Select, and_, bindparam, false, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.blob_store import BlobStore
from storage.chunk_intake import UPLOADS, ExistingUpload, mark_kept
from storage.database import Database
from storage.key_usage import add_upload_bytes
from storage.models import Chunk, Upload, detached
from storage.prepared_statements import PreparedStatement, write
from storage.state_machine import ChunkState
from storage.write_transaction import Transaction

# Built once, as the chunk transitions (storage/state_machine.py): every tus request reads
# an upload, every PATCH moves its offset (storage/prepared_statements.py).
_INSERT_UPLOAD = PreparedStatement(insert(UPLOADS))
_UPLOAD_BY_ID = PreparedStatement(select(UPLOADS).where(UPLOADS.c.id == bindparam("upload_id")))
_MOVE_OFFSET = PreparedStatement(
    update(UPLOADS).where(UPLOADS.c.id == bindparam("_id"), UPLOADS.c.offset == bindparam("_old"))
)


# Uploads the expiry sweep looks at: ix_uploads_expiring's condition (storage/models.py).
_EXPIRING = and_(UPLOADS.c.terminated_at.is_(None), UPLOADS.c.kept_with_meeting == false())


def _row(upload: Upload) -> dict[str, Any]:
    return {column.name: getattr(upload, column.name) for column in UPLOADS.columns}


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


class UploadIntake(Protocol):
    """What an upload's life means beyond its bytes (`storage/chunk_intake.py`)."""

    async def on_create(self, session: Transaction, upload: Upload) -> None:
        """In the creating transaction. May raise Refused, or ExistingUpload to answer with
        an upload that exists already."""

    async def inspect(self, upload: Upload) -> object:
        """Every byte is durable: look at them (off the event loop) before the transaction
        that records completion. The result is handed to `on_complete` as it is."""

    async def on_progress(self, session: Transaction, upload: Upload) -> None:
        """In the transaction that records the upload's first bytes."""

    def keeps(self, verdict: object) -> bool:
        """Whether an upload with this verdict becomes part of its meeting (kept until the
        meeting is deleted, never expired)."""

    async def on_complete(self, session: Transaction, upload: Upload, verdict: object) -> bool:
        """In the transaction that records the last bytes (or creates a complete upload).
        True: the upload is part of its meeting now."""

    async def on_terminate(self, session: Transaction, upload: Upload) -> None:
        """In the transaction that terminates the upload. May raise Refused."""

    async def on_expire(self, upload: Upload) -> None:
        """Before an expired upload is terminated by the sweep."""


class UploadStore:
    def __init__(self, db: Database, blobs: BlobStore, intake: UploadIntake) -> None:
        self.db = db
        self.blobs = blobs
        self.intake = intake

    async def create(self, upload: Upload) -> Upload | None:
        """Create the blob and the row; None when created, the existing upload when the
        creation names one that exists (a resumed chunk)."""
        await self.blobs.create(upload.id, upload.length)
        try:
            async with self.db.write() as session:
                await write(session, _INSERT_UPLOAD, _row(upload))
                await self.intake.on_create(session, upload)
            return None
        except ExistingUpload as existing:
            await self.blobs.delete(upload.id)
            return await self._existing(existing.upload_id)
        except IntegrityError:
            # Lost a race with an identical creation: the winner's row answers.
            await self.blobs.delete(upload.id)
            async with self.db.write() as session:
                try:
                    await self.intake.on_create(session, upload)
                except ExistingUpload as existing:
                    return await self._existing(existing.upload_id)
            raise
        except BaseException:
            await self.blobs.delete(upload.id)
            raise

    async def concatenate(self, upload: Upload, part_ids: list[str]) -> Upload | None:
        """A final upload from complete partial ones: its bytes are the parts' bytes, and it
        is complete (finished) at once. As `create`, the existing upload it names if any."""
        await self.blobs.create(upload.id, None)
        try:
            await self.blobs.concatenate(upload.id, part_ids)
            upload.offset = upload.length or 0
            async with self.db.write() as session:
                await write(session, _INSERT_UPLOAD, _row(upload))
                await self.intake.on_create(session, upload)
        except ExistingUpload as existing:
            await self.blobs.delete(upload.id)
            return await self._existing(existing.upload_id)
        except BaseException:
            await self.blobs.delete(upload.id)
            raise
        await self.finish(upload)
        return None

    async def _existing(self, upload_id: str) -> Upload:
        found = await self.get(upload_id)
        assert found is not None, "the intake named an upload that does not exist"
        return found

    async def commit_offset(
        self, upload: Upload, old: int, new: int, expires_at: float | None
    ) -> bool:
        """Record `new` as the offset (compare-and-set from `old`) once its bytes are durable,
        with the key's byte count and what the upload means (its first bytes, or its
        completion) in one transaction. False: the upload moved under the caller. Progress
        also pushes the expiry back: an upload expires when it stops moving, not while sent."""
        complete = upload.length is not None and new == upload.length
        verdict = await self.intake.inspect(upload) if complete else None
        values = {"_id": upload.id, "_old": old, "offset": new, "expires_at": expires_at}
        # Marked kept in the same statement when the verdict says so (no statement more on
        # the path of every upload); unmarked below in the rare case the chunk is not kept.
        keeps = complete and self.intake.keeps(verdict)
        if keeps:
            values["kept_with_meeting"] = True
        async with self.db.write() as session:
            if await write(session, _MOVE_OFFSET, values) != 1:
                return False
            upload.offset = new
            add_upload_bytes(session, upload.owner, new - old)
            if complete:
                kept = await self.intake.on_complete(session, upload, verdict)
                if keeps and not kept:
                    await mark_kept(session, upload.id, False)
                upload.kept_with_meeting = kept
            elif old == 0:
                await self.intake.on_progress(session, upload)
        upload.expires_at = expires_at
        return True

    async def finish(self, upload: Upload) -> None:
        """An upload complete without a last offset commit: at creation (zero length, or a
        final concatenation), or by a deferred length declared equal to its offset."""
        verdict = await self.intake.inspect(upload)
        async with self.db.write() as session:
            if await self.intake.on_complete(session, upload, verdict):
                await mark_kept(session, upload.id, True)
                upload.kept_with_meeting = True

    async def terminate(self, upload: Upload) -> None:
        """tus DELETE: the intake may refuse (an accepted chunk); then the row is marked and
        the bytes go."""
        async with self.db.write() as session:
            await self.intake.on_terminate(session, upload)
            await mark_terminated(session, [upload.id], time.time())
        await self.blobs.delete(upload.id)

    # ---- for the expiry sweep and meeting deletion ---------------------------------------

    async def expired(self, now: float, expiry_s: float) -> list[Upload]:
        """Uploads past their expiry that no meeting keeps."""
        async with self.db.read() as session:
            rows = await session.execute(expiry_candidates(now, expiry_s))
            return list(rows.scalars().all())

    async def expire(self, now: float, expiry_s: float) -> tuple[int, int]:
        """Terminate what `expired` finds: an unfinished chunk's key is freed, the bytes go.
        Returns (uploads, bytes reclaimed)."""
        expired = await self.expired(now, expiry_s)
        reclaimed = 0
        for upload in expired:
            await self.intake.on_expire(upload)
            async with self.db.write() as session:
                await mark_terminated(session, [upload.id], now)
            reclaimed += await self.blobs.delete(upload.id)
        return len(expired), reclaimed

    async def get(self, upload_id: str) -> Upload | None:
        """The upload as a detached object (every tus request reads one: a Core select is a
        good part cheaper than the ORM's identity-mapped load)."""
        row = await self.db.read_first(_UPLOAD_BY_ID, {"upload_id": upload_id})
        return None if row is None else detached(Upload, row)

    async def declare_length(self, upload_id: str, length: int) -> bool:
        async with self.db.write() as session:
            result = await session.execute(
                update(Upload)
                .where(Upload.id == upload_id, Upload.length.is_(None))
                .values(length=length)
            )
            if result.rowcount != 1:
                return False
        if length == 0:
            # Complete with no byte: its blob is made now, as an empty upload's is at
            # creation (a store may make any other at its first bytes).
            await self.blobs.create(upload_id, 0)
        return True


def expiry_candidates(now: float, expiry_s: float) -> Select[tuple[Upload]]:
    """The expiry sweep's read. Rows written before finals had an expiry count from their
    creation."""
    # The flag spares the probe of the chunk for every upload a meeting keeps (the partial
    # index holds only the others); the probe stays for an upload kept without the flag
    # (its chunk completed by the recovery sweep after a crash).
    kept = (
        select(Chunk.id)
        .where(Chunk.upload_id == Upload.id, Chunk.state.in_(_KEPT_WITH_MEETING))
        .exists()
    )
    return select(Upload).where(
        _EXPIRING,  # the partial index's own condition, so that the planner takes it
        func.coalesce(Upload.expires_at, Upload.created_at + expiry_s) < now,
        ~kept,
    )


async def mark_terminated(session: Transaction, upload_ids: list[str], now: float) -> None:
    """In the caller's transaction: the uploads' bytes are gone (or going)."""
    await session.execute(update(Upload).where(Upload.id.in_(upload_ids)).values(terminated_at=now))


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
    # Built as a loaded row is (`models.detached`): the mapped constructor sets each column
    # through its instrumented attribute, 30 us per upload created, on every POST.
    return detached(
        Upload,
        {
            "id": upload_id,
            "owner": owner,
            "length": length,
            "offset": 0,
            "meta": meta,
            "concat": concat,
            "concat_parts": concat_parts,
            "created_at": time.time(),
            "expires_at": expires_at,
            "terminated_at": None,
            "kept_with_meeting": False,
            "takeover_at": None,
        },
    )
