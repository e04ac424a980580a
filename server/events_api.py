"""Server-Sent Events from the durable event log, with Last-Event-ID replay.

A stream first replays what it missed from the log, then takes its meeting's new events
from the process's event feed (`storage/event_feed.py`), which reads the log once for every
stream and is woken when events are committed. Events written by worker processes or other
nodes arrive the same way, so any node can serve any meeting's stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from server.auth import OWNER
from server.errors import ApiError, Errors
from storage.event_feed import BATCH, EventFeed, LoggedEvent, Subscription
from storage.field_rules import MAX_DB_INT, ascii_int

# Comments on an idle stream, so proxies (nginx: 60 s by default) keep it open.
KEEPALIVE_S = 25.0
# A meeting's own events refresh its progress (at most this often)...
PROGRESS_EVERY_S = 2.0
# ...and changes elsewhere (which move its queue position and ETA) this often.
QUEUE_PROGRESS_EVERY_S = 10.0
# How often streams of revoked keys are looked for (such a stream ends within this).
OWNER_CHECK_S = 1.0
FINAL_EVENTS = ("meeting.completed", "meeting.failed")


class ProgressCache:
    """A meeting's progress (lag, queue position, ETA), shared by all its streams: computed
    again only when the meeting logged something new, or when it is older than the
    caller allows. A thousand idle streams cost no query."""

    def __init__(self, compute: Callable[[str, str], Awaitable[dict[str, Any]]]) -> None:
        self.compute = compute
        self._cached: dict[str, tuple[int, float, dict[str, Any]]] = {}

    async def get(
        self, meeting_id: str, owner: str, last_event: int, max_age_s: float
    ) -> dict[str, Any]:
        cached = self._cached.get(meeting_id)
        now = time.monotonic()
        if cached is not None and cached[0] == last_event and now - cached[1] < max_age_s:
            return cached[2]
        progress = await self.compute(meeting_id, owner)
        self._cached[meeting_id] = (last_event, now, progress)
        if len(self._cached) > 10000:  # meetings nobody follows any more
            self._cached.pop(next(iter(self._cached)))
        return progress


class EventsApi:
    def __init__(
        self,
        feed: EventFeed,
        progress_of: Callable[[str, str], Awaitable[dict[str, Any]]],
        owner_active: Callable[[str], bool] = lambda _owner: True,
    ) -> None:
        self.feed = feed
        self.progress = ProgressCache(progress_of)
        self.owner_active = owner_active
        self.streams: set[Stream] = set()
        self._task: asyncio.Task[None] | None = None
        self.closing = False

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/meetings/{meeting_id}/events", self.stream)]

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def end_streams(self, _app: web.Application | None = None) -> None:
        """The server is shutting down (aiohttp's on_shutdown, before it waits for open
        requests): every stream ends now rather than at its next keepalive."""
        self.closing = True
        for stream in self.streams:
            stream.sub.wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        """One task for all streams, so that an idle stream sleeps until something is for
        it: streams of a revoked key are woken (to end), and after changes elsewhere every
        stream is woken now and then to refresh its queue position and ETA."""
        seen_version = self.feed.version
        queue_tick = time.monotonic()
        while True:
            await asyncio.sleep(OWNER_CHECK_S)
            refresh = (
                self.feed.version != seen_version
                and time.monotonic() - queue_tick >= QUEUE_PROGRESS_EVERY_S
            )
            if refresh:
                seen_version, queue_tick = self.feed.version, time.monotonic()
            for stream in list(self.streams):
                if refresh or not self.owner_active(stream.owner):
                    stream.sub.wake.set()

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
        owner = request[OWNER]
        if await self.feed.owner_of(meeting_id) != owner:
            raise ApiError(Errors.MEETING_NOT_FOUND, meeting_id)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        # Subscribed before the replay: nothing committed in between is missed (what both
        # bring is sent once, by id).
        sub = await self.feed.subscribe(meeting_id)
        stream = Stream(self, request, response, sub, last_id, until_complete)
        self.streams.add(stream)
        try:
            await stream.run()
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        finally:
            self.streams.discard(stream)
            sub.close()
        await response.write_eof()
        return response


class Stream:
    def __init__(
        self,
        api: EventsApi,
        request: web.Request,
        response: web.StreamResponse,
        sub: Subscription,
        last_id: int,
        until_complete: bool,
    ) -> None:
        self.api = api
        self.owner = request[OWNER]
        self.response = response
        self.sub = sub
        self.last_id = last_id
        self.until_complete = until_complete
        self.last_write = time.monotonic()
        self.last_progress: dict[str, Any] | None = None
        self.progress_for = -1  # the last event id the progress was asked for
        self.progress_version = -1  # the feed's version then
        self.progress_at = 0.0
        self.done = False

    async def run(self) -> None:
        await self._replay()
        while (
            not (self.done and self.until_complete)
            and not self.api.closing
            and self.api.owner_active(self.owner)
        ):
            if self.sub.overflowed:  # fell behind the feed: read the rest from the log
                self.sub.overflowed = False
                await self._replay()
            await self._send(self.sub.take())
            if self.done and self.until_complete:
                break
            await self._progress()
            if time.monotonic() - self.last_write >= KEEPALIVE_S:
                await self.response.write(b": keepalive\n\n")
                self.last_write = time.monotonic()
            await self.sub.wait(KEEPALIVE_S - (time.monotonic() - self.last_write))

    async def _replay(self) -> None:
        while True:
            events = await self.api.feed.replay(self.sub.meeting_id, self.last_id, BATCH)
            await self._send(events)
            if len(events) < BATCH:
                return

    async def _send(self, events: list[LoggedEvent]) -> None:
        for event in events:
            if event.id <= self.last_id:
                continue  # both the replay and the feed brought it
            data = json.dumps({"type": event.type, "at": event.created_at, **event.payload})
            await self.response.write(
                f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()
            )
            self.last_id = event.id
            self.last_write = time.monotonic()
            self.done = self.done or event.type in FINAL_EVENTS

    async def _progress(self) -> None:
        """Lag, queue position and ETA as they change: computed, not logged, so they carry
        no id and are not replayed."""
        now = time.monotonic()
        own_news = self.last_id != self.progress_for
        # Others' work moves only a meeting that waits in the queue.
        waiting = self.last_progress is None or self.last_progress.get("queue_position") is not None
        elsewhere = waiting and self.api.feed.version != self.progress_version
        if not own_news and not (elsewhere and now - self.progress_at >= QUEUE_PROGRESS_EVERY_S):
            return  # nothing moved: the progress sent last is still true
        self.progress_for, self.progress_at = self.last_id, now
        self.progress_version = self.api.feed.version
        progress = await self.api.progress.get(
            self.sub.meeting_id,
            self.owner,
            self.last_id,
            PROGRESS_EVERY_S if own_news else QUEUE_PROGRESS_EVERY_S,
        )
        if progress != self.last_progress:
            self.last_progress = progress
            data = json.dumps({"type": "meeting.progress", **progress})
            await self.response.write(f"event: meeting.progress\ndata: {data}\n\n".encode())
            self.last_write = time.monotonic()
