"""Server-Sent Events from the durable event log, with Last-Event-ID replay.

The stream polls the event table rather than an in-process bus: events are written by
worker processes too, and any server node can serve any meeting's stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import select

from server.auth import OWNER
from server.errors import ApiError, Errors
from server.params import MAX_DB_INT, ascii_int
from storage.database import Database
from storage.models import Event, Meeting

POLL_S = 0.25
KEEPALIVE_S = 15.0
BATCH = 500


PROGRESS_EVERY_S = 2.0


class EventsApi:
    def __init__(
        self,
        db: Database,
        progress_of: Callable[[str, str], Awaitable[dict[str, Any]]],
        owner_active: Callable[[str], bool] = lambda _owner: True,
    ) -> None:
        self.db = db
        self.progress_of = progress_of
        # Asked every poll: a stream whose key was revoked ends within POLL_S of the reload.
        self.owner_active = owner_active

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/meetings/{meeting_id}/events", self.stream)]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        meeting_id = request.match_info["meeting_id"]
        raw_last = request.headers.get("Last-Event-ID", request.query.get("last_event_id", "0"))
        last_id = ascii_int(raw_last)
        if last_id is None:
            raise ApiError(
                Errors.INVALID_FIELD,
                f"Last-Event-ID must be an event id (an integer up to {MAX_DB_INT})",
            )
        until_complete = request.query.get("until") == "complete"
        async with self.db.read() as session:
            meeting = await session.get(Meeting, meeting_id)
            if meeting is None or meeting.owner != request[OWNER]:
                raise ApiError(Errors.MEETING_NOT_FOUND, meeting_id)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        last_write = time.monotonic()
        last_progress: dict[str, Any] | None = None
        progress_at = 0.0
        try:
            while self.owner_active(request[OWNER]):
                async with self.db.read() as session:
                    events = (
                        (
                            await session.execute(
                                select(Event)
                                .where(Event.meeting_id == meeting_id, Event.id > last_id)
                                .order_by(Event.id)
                                .limit(BATCH)
                            )
                        )
                        .scalars()
                        .all()
                    )
                done = False
                for event in events:
                    data = json.dumps({"type": event.type, "at": event.created_at, **event.payload})
                    await response.write(
                        f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()
                    )
                    last_id = event.id
                    last_write = time.monotonic()
                    done = done or event.type in ("meeting.completed", "meeting.failed")
                if done and until_complete:
                    break
                if time.monotonic() - progress_at > PROGRESS_EVERY_S:
                    # Lag, queue position and ETA as they change: computed, not logged, so
                    # they carry no id and are not replayed.
                    progress_at = time.monotonic()
                    progress = await self.progress_of(meeting_id, request[OWNER])
                    if progress != last_progress:
                        last_progress = progress
                        data = json.dumps({"type": "meeting.progress", **progress})
                        await response.write(f"event: meeting.progress\ndata: {data}\n\n".encode())
                        last_write = time.monotonic()
                if time.monotonic() - last_write > KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")
                    last_write = time.monotonic()
                if len(events) < BATCH:
                    await asyncio.sleep(POLL_S)
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        await response.write_eof()
        return response
