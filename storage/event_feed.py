"""The event log as a live feed, one per server process: it reads new events once and hands
them to every stream of their meeting, instead of each open stream polling the table.

It is woken at once when a transaction of this process commits events (`Database`'s commit
hook) and, on PostgreSQL, when any process commits some (LISTEN/NOTIFY: `record_event`'s
transaction notifies at commit; a LISTEN connection the server closed is opened again).
Events committed by other processes on SQLite (the transcription workers) are found by one
poll of the table every `poll_s`, whatever the number of streams; with no stream open it
reads nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from storage.commit_time_writes import EVENTS_CHANNEL
from storage.database import Database
from storage.database_outage import database_unavailable
from storage.models import Event, Meeting

log = logging.getLogger("rollscribe.event_feed")

BATCH = 500
# A stream that falls this far behind (a client that reads slowly) stops being fed in
# memory and reads the rest from the table itself.
MAX_BUFFERED = 5000
# PostgreSQL: how often a lost LISTEN connection is opened again (not at every poll while
# the server is down).
LISTEN_RETRY_S = 5.0


@dataclass(frozen=True)
class LoggedEvent:
    id: int
    meeting_id: str
    type: str
    created_at: float
    payload: dict[str, Any]


def _logged(event: Event) -> LoggedEvent:
    return LoggedEvent(event.id, event.meeting_id, event.type, event.created_at, event.payload)


class Subscription:
    """One stream's view of the feed: its meeting's new events and a wake-up for them."""

    def __init__(self, feed: EventFeed, meeting_id: str) -> None:
        self.feed = feed
        self.meeting_id = meeting_id
        self.events: deque[LoggedEvent] = deque()
        self.overflowed = False
        self.wake = asyncio.Event()

    def take(self) -> list[LoggedEvent]:
        taken = list(self.events)
        self.events.clear()
        return taken

    async def wait(self, timeout_s: float) -> None:
        # asyncio.timeout, not wait_for: no task per wait (a thousand streams wait at once).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.wake.wait()
        self.wake.clear()

    def close(self) -> None:
        self.feed._unsubscribe(self)


class EventFeed:
    def __init__(self, db: Database, poll_s: float = 0.25) -> None:
        self.db = db
        self.poll_s = poll_s
        self.position = 0  # the newest event id handed out
        self.version = 0  # moves on by one for every batch of new events
        self._subs: dict[str, set[Subscription]] = {}
        self._woken = asyncio.Event()
        self._committed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._listen_again_at = 0.0
        self._relisten: asyncio.Task[None] | None = None
        # When reading new events first found the database unavailable, while it still does.
        self._unavailable_since: float | None = None
        db.on_events_committed.append(self.notify)

    # ---- reading the log (no stream state) ------------------------------------------------

    async def owner_of(self, meeting_id: str) -> str | None:
        async with self.db.read() as session:
            found = await session.execute(select(Meeting.owner).where(Meeting.id == meeting_id))
            return found.scalar_one_or_none()

    async def replay(self, meeting_id: str, after: int, limit: int = BATCH) -> list[LoggedEvent]:
        """A meeting's events after id `after`, oldest first."""
        async with self.db.read() as session:
            rows = await session.execute(
                select(Event)
                .where(Event.meeting_id == meeting_id, Event.id > after)
                .order_by(Event.id)
                .limit(limit)
            )
            return [_logged(e) for e in rows.scalars()]

    # ---- live ----------------------------------------------------------------------------

    async def subscribe(self, meeting_id: str) -> Subscription:
        if not self._subs:
            # Nothing was read while no stream was open: start from now (streams replay
            # what they missed from the table themselves).
            async with self.db.read() as session:
                newest = await session.execute(select(func.max(Event.id)))
                self.position = max(self.position, newest.scalar_one() or 0)
        sub = Subscription(self, meeting_id)
        self._subs.setdefault(meeting_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.meeting_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.meeting_id]

    def notify(self) -> None:
        """Events were committed: read them now rather than at the next poll."""
        self._woken.set()
        self._committed.set()
        self._committed = asyncio.Event()

    async def wait_for_commit(self, timeout_s: float) -> None:
        """Until events are committed (as `notify` learns of it) or `timeout_s` passed."""
        committed = self._committed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await committed.wait()

    async def start(self) -> None:
        if not self.db.is_sqlite:
            await self._listen()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in (self._task, self._relisten):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                # Bounded: a server that stopped answering must not hold up a shutdown.
                await self._listener.close(timeout=5)

    async def _listen(self) -> None:
        """PostgreSQL: every commit that logged events notifies EVENTS_CHANNEL."""
        import asyncpg

        url = self.db.url.replace("postgresql+asyncpg://", "postgresql://")
        self._listen_again_at = time.monotonic() + LISTEN_RETRY_S
        try:
            listener = await asyncpg.connect(url)
            await listener.add_listener(EVENTS_CHANNEL, lambda *_: self.notify())
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Polling still finds every event, a little later; LISTEN is tried again.
            log.warning("cannot LISTEN for events (%s); polling every %ss", exc, self.poll_s)
            self._listener = None
            return
        self._listener = listener
        self.notify()  # what was committed while nobody listened: read it now

    def _listener_lost(self) -> bool:
        """PostgreSQL: the LISTEN connection is gone (a server restart closed it, or it
        could not be opened) and it is time to try again. asyncpg sees the closed socket
        by itself: asking costs no round trip."""
        if self.db.is_sqlite or time.monotonic() < self._listen_again_at:
            return False
        return self._listener is None or bool(self._listener.is_closed())

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for drops a cancellation
            # that arrives in the turn of the loop in which the event is set (`stop` right
            # after a `notify`), and this loop then ran on and `stop` never returned.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._woken.wait()
            self._woken.clear()
            if self._listener_lost() and (self._relisten is None or self._relisten.done()):
                # Beside the loop: a connection attempt that hangs (a network cut) must not
                # hold up the streams it feeds meanwhile by polling.
                self._relisten = asyncio.create_task(self._listen())
            if not self._subs:
                continue
            try:
                await self._read_new()
            except Exception as exc:  # the next round reads the same again
                if not database_unavailable(exc):
                    log.exception("reading new events failed")
                elif self._unavailable_since is None:
                    # An outage is not a fault, and this loop meets it every poll_s: said
                    # once when it begins and once when it ends, with no traceback.
                    self._unavailable_since = time.monotonic()
                    log.warning(
                        "reading new events: the database is unavailable (%s); the streams "
                        "wait for it",
                        exc,
                    )
                continue
            if self._unavailable_since is not None:
                log.info(
                    "reading new events again, after %.1f s of the database unavailable",
                    time.monotonic() - self._unavailable_since,
                )
                self._unavailable_since = None

    async def _read_new(self) -> None:
        while True:
            async with self.db.read() as session:
                rows = await session.execute(
                    select(Event).where(Event.id > self.position).order_by(Event.id).limit(BATCH)
                )
                batch = [_logged(e) for e in rows.scalars()]
            if not batch:
                return
            self.position = batch[-1].id
            self.version += 1
            for event in batch:
                for sub in self._subs.get(event.meeting_id, ()):
                    if len(sub.events) >= MAX_BUFFERED:
                        sub.overflowed = True
                        sub.events.clear()
                    elif not sub.overflowed:
                        sub.events.append(event)
            for meeting_id in {e.meeting_id for e in batch}:
                for sub in self._subs.get(meeting_id, ()):
                    sub.wake.set()
            if len(batch) < BATCH:
                return

    @property
    def streams(self) -> int:
        return sum(len(s) for s in self._subs.values())
