"""Admission control and readiness: a bounded backlog instead of an invisible one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from server.errors import ApiError, Errors
from storage.backlog import read_backlog, read_recent_rtf
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

    async def check_new_meeting(self) -> None:
        """New meetings wait while the backlog is over the limit; meetings already recording
        keep uploading (nothing accepted is ever dropped)."""
        backlog = await read_backlog(self.db, time.time())
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
            backlog = await read_backlog(self.db, time.time())
            checks["backlog"] = (
                "ok"
                if backlog.workable_audio_s <= self.max_backlog_s
                else f"over limit ({backlog.workable_audio_s:.0f} s > {self.max_backlog_s:.0f} s)"
            )
        ready = all(v == "ok" for v in checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)
