"""Admission control and readiness: a bounded backlog instead of an invisible one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from server.errors import ApiError, Errors
from storage.backlog import Backlog, read_backlog, read_recent_rtf
from storage.blob_store import BlobStore
from storage.database import Database

MIN_RETRY_S = 5
MAX_RETRY_S = 3600


@dataclass
class Admission:
    db: Database
    max_backlog_s: float
    workers: Callable[[], int]
    ready_workers: Callable[[], int]
    blobs: BlobStore

    # The backlog read in progress: callers that arrive meanwhile take its answer.
    _reading: asyncio.Task[Backlog] | None = field(default=None, init=False)

    async def _backlog(self) -> Backlog:
        """The backlog, read once for every check that asks while a read is under way.
        Recorders open meetings together (a Discord channel's speakers, a room of laptops);
        each read sums every chunk of every active meeting, and 50 of them at once left the
        server holding 75 MiB more (bench/README.md, "A long-running server"). A check that
        comes alone still reads afresh."""
        if self._reading is None:
            self._reading = asyncio.create_task(read_backlog(self.db, time.time()))
            self._reading.add_done_callback(self._read_done)
        return await asyncio.shield(self._reading)  # a caller gone does not stop the read

    def _read_done(self, task: asyncio.Task[Backlog]) -> None:
        self._reading = None
        if not task.cancelled():
            task.exception()  # retrieved here too: the callers that asked may all be gone

    async def check_new_meeting(self) -> None:
        """New meetings wait while the backlog is over the limit; meetings already recording
        keep uploading (nothing accepted is ever dropped)."""
        backlog = await self._backlog()
        over = backlog.workable_audio_s - self.max_backlog_s
        if over <= 0:
            return
        rtf = await read_recent_rtf(self.db)
        drain_s = over * rtf / max(1, self.workers())
        retry = int(min(MAX_RETRY_S, max(MIN_RETRY_S, drain_s)))
        raise ApiError(
            Errors.BACKLOG_FULL,
            f"{backlog.workable_audio_s:.0f} s of audio waiting, limit {self.max_backlog_s:.0f} s",
            {"Retry-After": str(retry)},
        )

    async def readyz(self, _request: web.Request) -> web.Response:
        checks: dict[str, object] = {}
        try:
            await self.db.ping()
            checks["database"] = "ok"
        except Exception as exc:  # any failure to reach it means not ready
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            await self.blobs.ping()
            checks["blob_store"] = "ok"
        except Exception as exc:  # an unreachable bucket or unwritable folder: not ready
            checks["blob_store"] = f"unusable: {type(exc).__name__}: {exc}"
        checks["model"] = (
            "ok" if self.workers() == 0 or self.ready_workers() > 0 else "no worker has it loaded"
        )
        if checks["database"] == "ok":
            backlog = await self._backlog()
            checks["backlog"] = (
                "ok"
                if backlog.workable_audio_s <= self.max_backlog_s
                else f"over limit ({backlog.workable_audio_s:.0f} s > {self.max_backlog_s:.0f} s)"
            )
        ready = all(v == "ok" for v in checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)
