"""Moves every non-terminal meeting and chunk on, at start and then periodically.

Nothing here needs the process that started the work: a chunk's state in the database
says what comes next, so a restart (or another node) picks up where things stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import select

from server.ingest import ChunkIngest
from storage.blob_store import BlobStore
from storage.database import Database
from storage.job_queue import RetryPolicy, promote_stuck_waiting, reap_expired_leases
from storage.models import Chunk, Meeting, Upload
from storage.state_machine import ChunkState, MeetingState, StaleState, transition_meeting
from storage.upload_store import UploadStore
from transcribe.assembly import assemble_if_ready, give_up_missing

log = logging.getLogger("rollscribe.recovery")


class RecoverySweeper:
    def __init__(
        self,
        db: Database,
        ingest: ChunkIngest,
        blobs: BlobStore,
        retry: RetryPolicy,
        *,
        interval_s: float,
        missing_grace_s: float,
        abandon_after_s: float,
        upload_expiry_s: float,
    ) -> None:
        self.db = db
        self.ingest = ingest
        self.blobs = blobs
        self.retry = retry
        self.interval_s = interval_s
        self.missing_grace_s = missing_grace_s
        self.abandon_after_s = abandon_after_s
        self.upload_expiry_s = upload_expiry_s
        self.uploads = UploadStore(db)
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> None:
        # Uploads whose bytes all arrived but whose chunk did not hear of it (crash between
        # the offset commit and the chunk transition).
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(Chunk, Upload)
                    .join(Upload, Upload.id == Chunk.upload_id)
                    .where(
                        Chunk.state.in_(
                            [
                                ChunkState.CREATED.value,
                                ChunkState.UPLOADING.value,
                                ChunkState.UPLOADED.value,
                            ]
                        )
                    )
                )
            ).all()
        for chunk, upload in rows:
            if chunk.state == ChunkState.UPLOADED.value:
                await self.ingest.validate(chunk.id)
            elif upload.length is not None and upload.offset == upload.length:
                await self.ingest.settle_complete(upload)
        await reap_expired_leases(self.db, self.retry)
        await promote_stuck_waiting(self.db)
        async with self.db.read() as session:
            finalizing = (
                (
                    await session.execute(
                        select(Meeting.id).where(Meeting.state == MeetingState.FINALIZING.value)
                    )
                )
                .scalars()
                .all()
            )
        for meeting_id in finalizing:
            if await give_up_missing(self.db, meeting_id, self.missing_grace_s):
                await promote_stuck_waiting(self.db)
            await assemble_if_ready(self.db, meeting_id)
        await self.expire_uploads()
        await self.abandon_silent_meetings()

    async def expire_uploads(self) -> int:
        """Uploads past Upload-Expires that no meeting keeps (unfinished ones, and complete
        ones that became no accepted chunk: rejected, plain files, concatenation parts):
        bytes deleted, space reclaimed, an unfinished chunk's key freed for a new upload."""
        now = time.time()
        expired = await self.uploads.expired(now, self.upload_expiry_s)
        reclaimed = 0
        for upload in expired:
            await self.ingest.on_expire(upload)
            await self.uploads.mark_terminated(upload.id, now)
            reclaimed += await self.blobs.delete(upload.id)
        if expired:
            log.info("expired %d uploads, reclaimed %d bytes", len(expired), reclaimed)
        return reclaimed

    async def abandon_silent_meetings(self) -> None:
        cutoff = time.time() - self.abandon_after_s
        async with self.db.write() as session:
            silent = (
                (
                    await session.execute(
                        select(Meeting).where(
                            Meeting.state == MeetingState.RECORDING.value,
                            Meeting.created_at < cutoff,
                            ~select(Chunk.id).where(Chunk.meeting_id == Meeting.id).exists(),
                        )
                    )
                )
                .scalars()
                .all()
            )
            for meeting in silent:
                try:
                    await transition_meeting(
                        session,
                        meeting,
                        MeetingState.ABANDONED,
                        event="meeting.abandoned",
                        payload={"reason": f"no chunk within {self.abandon_after_s:g}s"},
                    )
                except StaleState:
                    pass

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sweep()
            except Exception:
                log.exception("recovery sweep failed; trying again")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
