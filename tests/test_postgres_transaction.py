"""PostgreSQL write transactions on asyncpg (storage/postgres_transaction.py): the events and
byte counts a transaction logged and its COMMIT go as one query; a block that raises, a
commit that fails and a caller cancelled mid-statement all leave nothing written and no
connection inside a transaction; the values written as literals come back exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError

from storage.commit_time_writes import EVENTS, UPLOAD_BYTES, _literal, log_event, postgres_commit
from storage.database import Database
from storage.key_usage import add_upload_bytes
from storage.state_machine import MEETINGS, new_meeting
from storage.write_transaction import WriteTransaction
from tests.databases import on_postgres
from tests.upload_store_setup import fresh_database

needs_postgres = pytest.mark.skipif(
    not on_postgres(), reason="asyncpg's transactions (ROLLSCRIBE_TEST_POSTGRES)"
)


@contextmanager
def _queries_sent(db: Database) -> Iterator[list[str]]:
    """The queries asyncpg logs (those sent as text: its prepared statements are not) on
    connections the database's pool hands out from now on."""
    sent: list[str] = []
    logged: set[int] = set()

    def on_checkout(dbapi_connection: Any, _record: object, _proxy: object) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in logged:
            logged.add(id(driver))
            driver.add_query_logger(lambda r: sent.append(r.query))

    event.listen(db.write_engine.sync_engine.pool, "checkout", on_checkout)
    try:
        yield sent
    finally:
        event.remove(db.write_engine.sync_engine.pool, "checkout", on_checkout)


async def _count(db: Database, table: Any) -> int:
    async with db.read() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def _open_transactions(db: Database) -> int:
    """Backends of this database inside a transaction, this one's own read aside."""
    async with db.read() as session:
        found = await session.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
            )
        )
        return int(found.scalar_one())


async def _add_meeting(session: WriteTransaction, meeting_id: str) -> None:
    session.add(new_meeting(meeting_id=meeting_id, external_id=None, title=None, tracks=["mic"]))
    await session.flush()


@needs_postgres
def test_what_a_transaction_logged_and_its_commit_are_one_query(tmp_path: Path) -> None:
    async def main() -> tuple[list[str], list[str], int, int]:
        db = await fresh_database(tmp_path)
        woken: list[bool] = []
        db.on_events_committed.append(lambda: woken.append(True))
        try:
            with _queries_sent(db) as sent:
                async with db.write() as session:
                    await _add_meeting(session, "m1")
                    log_event(session, "m1", "test.one", {"n": 1})
                    log_event(session, "m1", "test.two", {"n": 2})
                    add_upload_bytes(session, "k", 100)
            async with db.read() as session:
                types = list(
                    (await session.execute(select(EVENTS.c.type).order_by(EVENTS.c.id))).scalars()
                )
                counted = (await session.execute(select(UPLOAD_BYTES.c.bytes))).scalar_one()
            assert await _count(db, MEETINGS) == 1  # the transaction's other writes
            return sent, types, counted, len(woken)
        finally:
            await db.close()

    sent, types, counted, woken = asyncio.run(main())
    assert sent[0] == "BEGIN ISOLATION LEVEL READ COMMITTED", sent
    # The lock, the events, the count and COMMIT: one query, the transaction's last, and
    # nothing of it sent on its own.
    last = sent[-1]
    assert "pg_advisory_xact_lock" in last and "key_upload_bytes" in last, last
    assert last.endswith(";\nCOMMIT"), last
    assert [q for q in sent if "INSERT INTO events" in q or q.endswith("COMMIT")] == [last], sent
    assert types == ["test.one", "test.two"]
    assert counted == 100
    assert woken == 1


@needs_postgres
def test_a_transaction_without_events_ends_with_commit_alone(tmp_path: Path) -> None:
    async def main() -> list[str]:
        db = await fresh_database(tmp_path)
        try:
            with _queries_sent(db) as sent:
                async with db.write() as session:
                    await _add_meeting(session, "m1")
            return sent
        finally:
            await db.close()

    sent = asyncio.run(main())
    assert sent[0].startswith("BEGIN") and sent[-1] == "COMMIT", sent
    assert not [q for q in sent if "events" in q], sent


@needs_postgres
def test_a_block_that_raises_writes_nothing_and_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[int, int, int, int]:
        db = await fresh_database(tmp_path)
        try:
            with pytest.raises(RuntimeError):
                async with db.write() as session:
                    await _add_meeting(session, "m1")
                    log_event(session, "m1", "test.lost", {})
                    raise RuntimeError("the caller's own failure")
            open_after = await _open_transactions(db)
            # The connection is used again, outside any transaction of the one before.
            async with db.write() as session:
                await _add_meeting(session, "m2")
                log_event(session, "m2", "test.kept", {})
            return (
                open_after,
                await _count(db, MEETINGS),
                await _count(db, EVENTS),
                (await _open_transactions(db)),
            )
        finally:
            await db.close()

    assert asyncio.run(main()) == (0, 1, 1, 0)


@needs_postgres
def test_a_commit_query_that_fails_raises_and_keeps_nothing(tmp_path: Path) -> None:
    """The events' insert fails inside the commit query (a trigger refuses it): the caller
    gets the database's error, none of the transaction's rows stay, and the connection is
    rolled back before anyone uses it again."""

    async def main() -> tuple[int, int, int]:
        db = await fresh_database(tmp_path)
        try:
            async with db.read() as session:
                await session.execute(
                    text(
                        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                        " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                    )
                )
                await session.execute(
                    text(
                        "CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW"
                        " WHEN (NEW.type = 'test.refused') EXECUTE FUNCTION refuse()"
                    )
                )
                await session.commit()
            with pytest.raises(DBAPIError, match="refused by the test"):
                async with db.write() as session:
                    await _add_meeting(session, "m1")
                    log_event(session, "m1", "test.refused", {})
            async with db.write() as session:
                await _add_meeting(session, "m2")
            return (
                await _count(db, MEETINGS),
                await _count(db, EVENTS),
                (await _open_transactions(db)),
            )
        finally:
            await db.close()

    assert asyncio.run(main()) == (1, 0, 0)


@needs_postgres
def test_a_caller_cancelled_mid_statement_leaves_no_transaction_open(tmp_path: Path) -> None:
    async def main() -> tuple[int, int, int]:
        db = await fresh_database(tmp_path)
        try:
            started = asyncio.Event()

            async def slow_write() -> None:
                async with db.write() as session:
                    await _add_meeting(session, "m1")
                    started.set()
                    await session.execute(text("SELECT pg_sleep(5)"))

            task = asyncio.create_task(slow_write())
            await started.wait()
            await asyncio.sleep(0.2)  # inside the sleep
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The rollback, shielded, goes on after the caller's cancellation: given time.
            for _ in range(200):
                open_after = await _open_transactions(db)
                if not open_after:
                    break
                await asyncio.sleep(0.05)
            for meeting_id in ("m2", "m3"):  # whichever connections come next
                async with db.write() as session:
                    await _add_meeting(session, meeting_id)
            return open_after, await _count(db, MEETINGS), await _open_transactions(db)
        finally:
            await db.close()

    assert asyncio.run(main()) == (0, 2, 0)


@needs_postgres
def test_values_written_as_literals_come_back_exactly(tmp_path: Path) -> None:
    payload = {
        "quote": "it's",
        "backslash": "C:\\path\\n",
        "both": "\\'; DROP TABLE events; --",
        "unicode": "Grüße, 会議 🎙",
        "control": "a\x07b\x1fc\n",
    }

    async def main() -> tuple[dict[str, Any], str]:
        db = await fresh_database(tmp_path)
        try:
            async with db.write() as session:
                log_event(session, "m'1", "test.quoted", payload)
                add_upload_bytes(session, "key 'with' \\quotes", 7)
            async with db.read() as session:
                stored = (
                    await session.execute(select(EVENTS.c.meeting_id, EVENTS.c.payload))
                ).one()
                owner = (await session.execute(select(UPLOAD_BYTES.c.owner))).scalar_one()
            assert stored.meeting_id == "m'1"
            return stored.payload, owner
        finally:
            await db.close()

    stored, owner = asyncio.run(main())
    assert stored == payload
    assert owner == "key 'with' \\quotes"


def test_a_literal_is_only_made_of_ascii_without_nul() -> None:
    assert _literal("it's \\ here") == "E'it''s \\\\ here'"
    for refused in ("Grüße", "a\x00b"):
        with pytest.raises(ValueError):
            _literal(refused)


def test_a_transaction_that_logged_nothing_commits_alone() -> None:
    assert postgres_commit({}) == "COMMIT"
