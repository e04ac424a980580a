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
from storage.database import Database
from storage.job_queue import RetryPolicy, promote_stuck_waiting, reap_expired_leases
from storage.models import Chunk, Meeting, Upload
from storage.state_machine import ChunkState, MeetingState
from transcribe.assembly import assemble_if_ready

log = logging.getLogger("rollscribe.recovery")


class RecoverySweeper:
    def __init__(
        self, db: Database, ingest: ChunkIngest, retry: RetryPolicy, interval_s: float = 2.0
    ) -> None:
        self.db = db
        self.ingest = ingest
        self.retry = retry
        self.interval_s = interval_s
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
                await self.ingest.on_complete(upload)
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
            await assemble_if_ready(self.db, meeting_id)

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
