"""The event feed that live streams read (storage/event_feed.py): woken by this process's
commits at once, finding other processes' events by its poll (or at once through
LISTEN/NOTIFY on PostgreSQL), waking only the streams of the meeting concerned, and
handing a stream that falls too far behind back to the log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import event_feed
from storage.database import Database
from storage.event_feed import EventFeed
from storage.schema import upgrade
from storage.state_machine import record_event
from tests.databases import database_url_for, on_postgres


async def log(db: Database, meeting_id: str, type_: str = "chunk.uploaded") -> None:
    async with db.write() as session:
        record_event(session, meeting_id, type_, {})


async def opened(data_dir: Path) -> Database:
    db = Database(database_url_for(data_dir))
    await upgrade(db)
    return db


@asynccontextmanager
async def feed_with_another_process(
    data_dir: Path, poll_s: float
) -> AsyncIterator[tuple[EventFeed, Database]]:
    """A started feed, and a second Database on the same database: another process's
    connection, whose commits have no hook to this feed."""
    db = await opened(data_dir)
    elsewhere = Database(db.url)
    feed = EventFeed(db, poll_s=poll_s)
    await feed.start()
    try:
        yield feed, elsewhere
    finally:
        await feed.stop()
        await elsewhere.close()
        await db.close()


# Far more than any check here takes (under a second): past it, what hangs is shown.
HANG_S = 120


async def _show_what_hangs() -> str:
    """Every task's stack and, on PostgreSQL, what each busy backend waits on and for whom:
    a check in this file hung twice in CI (600 s, the loop idle). The stacks this shows found
    the cause: `EventFeed.stop` after a `notify` in the same turn of the loop, with the
    feed's loop on `asyncio.wait_for` (test_stop_ends_the_feed_even_as_an_event_wakes_it)."""
    import io

    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(file=out)
    if on_postgres():
        import asyncpg

        from tests.databases import POSTGRES

        connection = await asyncpg.connect(POSTGRES.replace("+asyncpg", "") + "/postgres")
        try:
            rows = await connection.fetch(
                "SELECT pid, datname, state, wait_event_type, wait_event, "
                "pg_blocking_pids(pid) AS blocked_by, left(query, 200) AS query "
                "FROM pg_stat_activity WHERE state IS DISTINCT FROM 'idle'"
            )
            out.writelines(f"{dict(r)}\n" for r in rows)
        finally:
            await connection.close()
    return out.getvalue()


def run(coroutine_function, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    data.mkdir()

    async def bounded() -> None:
        check = asyncio.ensure_future(coroutine_function(data))
        done, _ = await asyncio.wait({check}, timeout=HANG_S)
        if not done:
            shown = await _show_what_hangs()
            check.cancel()
            pytest.fail(f"hung for {HANG_S} s; tasks and PostgreSQL backends:\n{shown}")
        check.result()

    asyncio.run(bounded())


def test_a_commit_in_this_process_wakes_the_stream_without_a_poll(tmp_path):
    async def check(data: Path) -> None:
        db = await opened(data)
        feed = EventFeed(db, poll_s=60)  # no poll in this test's time
        await feed.start()
        try:
            mine = await feed.subscribe("m1")
            other = await feed.subscribe("m2")
            started = time.monotonic()
            await log(db, "m1")
            await mine.wait(5)
            assert time.monotonic() - started < 1.0
            assert [e.type for e in mine.take()] == ["chunk.uploaded"]
            assert not other.wake.is_set() and other.take() == []  # not its meeting
            mine.close()
            other.close()
        finally:
            await feed.stop()
            await db.close()

    run(check, tmp_path)


def test_another_process_events_are_found_by_the_poll(tmp_path):
    async def check(data: Path) -> None:
        async with feed_with_another_process(data, poll_s=0.2) as (feed, elsewhere):
            sub = await feed.subscribe("m1")
            await log(elsewhere, "m1", "chunk.transcribed")
            await sub.wait(5)
            assert [e.type for e in sub.take()] == ["chunk.transcribed"]
            sub.close()
            assert feed.streams == 0

    run(check, tmp_path)


def test_nothing_is_read_while_no_stream_is_open(tmp_path):
    async def check(data: Path) -> None:
        db = await opened(data)
        feed = EventFeed(db, poll_s=0.05)
        await feed.start()
        try:
            for _ in range(5):
                await log(db, "m1")
            await asyncio.sleep(0.3)
            assert feed.position == 0 and feed.version == 0  # nobody listens: no reads
            sub = await feed.subscribe("m1")
            assert feed.position == 5  # from now on; the stream replays the rest itself
            assert [e.id for e in await feed.replay("m1", 2)] == [3, 4, 5]
            sub.close()
        finally:
            await feed.stop()
            await db.close()

    run(check, tmp_path)


def test_a_stream_too_far_behind_is_sent_back_to_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(event_feed, "MAX_BUFFERED", 3)

    async def check(data: Path) -> None:
        db = await opened(data)
        feed = EventFeed(db, poll_s=60)
        await feed.start()
        try:
            sub = await feed.subscribe("m1")
            for _ in range(5):
                await log(db, "m1")
            await asyncio.sleep(0.3)
            assert sub.overflowed and len(sub.events) <= 3
        finally:
            await feed.stop()
            await db.close()

    run(check, tmp_path)


def test_the_webhook_dispatcher_wait_ends_at_a_commit(tmp_path):
    async def check(data: Path) -> None:
        db = await opened(data)
        feed = EventFeed(db, poll_s=60)
        try:
            waiting = asyncio.create_task(feed.wait_for_commit(30))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await log(db, "m1")
            await asyncio.wait_for(waiting, 1)
        finally:
            await db.close()

    run(check, tmp_path)


@pytest.mark.skipif(not on_postgres(), reason="LISTEN/NOTIFY is PostgreSQL's")
def test_postgres_notifies_other_processes_at_commit(tmp_path):
    async def check(data: Path) -> None:
        async with feed_with_another_process(data, poll_s=60) as (feed, elsewhere):
            sub = await feed.subscribe("m1")
            started = time.monotonic()
            await log(elsewhere, "m1")
            await sub.wait(5)
            assert time.monotonic() - started < 1.0
            assert len(sub.take()) == 1
            sub.close()

    run(check, tmp_path)


@pytest.mark.skipif(not on_postgres(), reason="LISTEN/NOTIFY is PostgreSQL's")
def test_a_listen_connection_the_server_closed_is_opened_again(tmp_path):
    """A PostgreSQL restart closes the LISTEN connection: the feed opens a new one by
    itself, and other processes' commits wake it at once again (not only its poll)."""

    async def check(data: Path) -> None:
        async with feed_with_another_process(data, poll_s=0.2) as (feed, elsewhere):
            first = feed._listener.get_server_pid()
            async with elsewhere.write() as session:
                await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            for _ in range(100):  # up to 5 s
                listener = feed._listener
                if listener is not None and not listener.is_closed():
                    if listener.get_server_pid() != first:
                        break
                await asyncio.sleep(0.05)
            assert feed._listener is not None and not feed._listener.is_closed()
            assert feed._listener.get_server_pid() != first
            # Only a notification ends this wait (the poll does not): LISTEN works again.
            waiting = asyncio.ensure_future(feed.wait_for_commit(5))
            await asyncio.sleep(0)
            started = time.monotonic()
            await log(elsewhere, "m1")
            await waiting
            assert time.monotonic() - started < 1.0

    run(check, tmp_path)


def test_stop_ends_the_feed_even_as_an_event_wakes_it(tmp_path):
    """`stop` right after a `notify`, in the same turn of the loop. The feed's loop waited
    with `asyncio.wait_for`, which on Python 3.11 drops a cancellation that arrives as the
    awaited event is set: the loop then ran on and `stop` never returned (the hangs of this
    file seen in CI)."""

    async def check(data: Path) -> None:
        db = await opened(data)
        try:
            for _ in range(10):
                feed = EventFeed(db)
                await feed.start()
                await asyncio.sleep(0.01)
                feed.notify()
                async with asyncio.timeout(5):
                    await feed.stop()
        finally:
            await db.close()

    run(check, tmp_path)
