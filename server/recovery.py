"""Moves every non-terminal meeting and chunk on, at start and then periodically.

Nothing here needs the process that started the work: a chunk's state in the database
says what comes next, so a restart (or another node) picks up where things stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from storage.chunk_intake import ChunkIntake
from storage.chunk_state_counts import fold_deltas
from storage.database import Database
from storage.job_queue import RetryPolicy, promote_stuck_waiting, reap_expired_leases
from storage.meeting_completion import (
    abandon_silent_meetings,
    assemble_if_ready,
    finalizing_meetings,
    give_up_missing,
)
from storage.store_outage import unavailable_store
from storage.upload_store import UploadStore

log = logging.getLogger("rollscribe.recovery")


class RecoverySweeper:
    def __init__(
        self,
        db: Database,
        intake: ChunkIntake,
        uploads: UploadStore,
        retry: RetryPolicy,
        *,
        interval_s: float,
        missing_grace_s: float,
        abandon_after_s: float,
        upload_expiry_s: float,
    ) -> None:
        self.db = db
        self.intake = intake
        self.uploads = uploads
        self.retry = retry
        self.interval_s = interval_s
        self.missing_grace_s = missing_grace_s
        self.abandon_after_s = abandon_after_s
        self.upload_expiry_s = upload_expiry_s
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> None:
        # Uploads whose bytes all arrived but whose chunk did not hear of it (crash between
        # the offset commit and the chunk transition), and chunks validated by nobody.
        await self.intake.settle_unfinished()
        await reap_expired_leases(self.db, self.retry)
        await promote_stuck_waiting(self.db)
        for meeting_id in await finalizing_meetings(self.db):
            if await give_up_missing(self.db, meeting_id, self.missing_grace_s):
                await promote_stuck_waiting(self.db)
            await assemble_if_ready(self.db, meeting_id)
        await self.expire_uploads()
        await abandon_silent_meetings(self.db, self.abandon_after_s)
        await fold_deltas(self.db)

    async def expire_uploads(self) -> int:
        """Uploads past Upload-Expires that no meeting keeps (unfinished ones, and complete
        ones that became no accepted chunk: rejected, plain files, concatenation parts):
        bytes deleted, space reclaimed, an unfinished chunk's key freed for a new upload."""
        expired, reclaimed = await self.uploads.expire(time.time(), self.upload_expiry_s)
        if expired:
            log.info("expired %d uploads, reclaimed %d bytes", expired, reclaimed)
        return reclaimed

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sweep()
            except Exception as exc:
                # An outage (the blob store: the expiry's deletes) is not a fault: one
                # line each sweep, no traceback.
                which = unavailable_store(exc)
                if which is not None:
                    log.warning("recovery sweep: the %s is unavailable (%s)", which, exc)
                else:
                    log.exception("recovery sweep failed; trying again")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
