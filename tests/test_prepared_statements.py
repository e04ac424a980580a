"""The upload path's statements on the driver itself (storage/prepared_statements.py):
the same rows, types and errors as through Core, Core where the driver path does not apply,
and an upload whose statements never go through SQLAlchemy's execution. On SQLite (sqlite3)
and on PostgreSQL (asyncpg, through SQLAlchemy's adapter)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, event, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from storage.commit_time_writes import EVENTS
from storage.models import Chunk, Meeting, Upload, detached
from storage.prepared_statements import PreparedStatement, fetch_first, write
from storage.state_machine import CHUNKS, MEETINGS, ChunkState, MeetingState, new_meeting
from storage.upload_store import make_upload
from tests.databases import on_postgres
from tests.upload_store_setup import chunk_upload, fresh_database, store_with_a_meeting

UPLOADS = Upload.__table__
_UPLOAD = PreparedStatement(select(UPLOADS).where(UPLOADS.c.id == bindparam("upload_id")))
_INSERT_UPLOAD = PreparedStatement(insert(UPLOADS))
_MEETING = PreparedStatement(select(MEETINGS).where(MEETINGS.c.id == bindparam("meeting_id")))
_INSERT_EVENT = PreparedStatement(insert(EVENTS))
_INSERT_CHUNK = PreparedStatement(insert(CHUNKS))
_CHUNK = PreparedStatement(select(CHUNKS).where(CHUNKS.c.upload_id == bindparam("upload_id")))
# `tracks` and `gaps` left out: their defaults are computed in Python (models.py).
_INSERT_MEETING = PreparedStatement(insert(MEETINGS))


@contextmanager
def _through_sqlalchemy() -> Iterator[list[str]]:
    """Every statement any engine runs through SQLAlchemy's execution."""
    seen: list[str] = []

    def trace(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split()[0] + " " + " ".join(statement.split()[1:3]))

    event.listen(Engine, "before_cursor_execute", trace)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", trace)


def _upload_row(upload_id: str, **changes: Any) -> dict[str, Any]:
    upload = make_upload(
        upload_id=upload_id,
        length=100,
        meta={"meeting_id": "m1", "track": "mic", "seq": "0", "start_ms": "0", "name": "ä ✓"},
        concat=None,
        concat_parts=None,
        expires_at=None,
        owner="key",
    )
    row = {column.name: getattr(upload, column.name) for column in UPLOADS.columns}
    row.update(changes)
    return row


def test_an_upload_runs_no_statement_through_sqlalchemys_execution(tmp_path: Path) -> None:
    """POST and PATCH of a chunk: every row read and written on the driver directly; only
    the transactions' own statements (BEGIN, SAVEPOINT, RELEASE) are SQLAlchemy's. On
    PostgreSQL this also fails if a SQLAlchemy release renames the adapter's parts that the
    driver path uses (it would fall back to Core)."""

    async def main() -> tuple[list[str], list[ChunkState], int]:
        db = await fresh_database(tmp_path)
        store = await store_with_a_meeting(db, tmp_path)
        uploads = [chunk_upload(0), chunk_upload(1)]
        with _through_sqlalchemy() as seen:
            for upload in uploads:
                assert await store.create(upload) is None
                found = await store.get(upload.id)
                assert found is not None and found.meta == upload.meta
                assert await store.commit_offset(found, 0, 100, None)
        async with db.read() as session:
            states = list(
                (await session.execute(select(Chunk.state).order_by(Chunk.seq))).scalars()
            )
            events = len((await session.execute(select(EVENTS.c.id))).all())
        await db.close()
        return seen, states, events

    seen, states, events = asyncio.run(main())
    assert {s.split()[0] for s in seen} <= {"BEGIN", "SAVEPOINT", "RELEASE", "COMMIT"}, seen
    # The rows are what Core would have written: the first chunk queued, the second waiting
    # for it (queued is not done), each with its two events.
    assert states == [ChunkState.QUEUED, ChunkState.WAITING]
    assert events == 4


def test_rows_come_back_as_the_column_types_read_them(tmp_path: Path) -> None:
    """JSON, booleans, states and NULLs: as SQLAlchemy's own reads give them."""

    async def main() -> tuple[dict[str, Any] | None, dict[str, Any] | None, Upload, Meeting]:
        db = await fresh_database(tmp_path)
        async with db.write() as transaction:
            transaction.add(new_meeting(meeting_id="m1", external_id=None, title=None, tracks=[]))
            await transaction.flush()
            await write(transaction, _INSERT_UPLOAD, _upload_row("u1", kept_with_meeting=True))
            prepared = await fetch_first(transaction, _UPLOAD, {"upload_id": "u1"})
            meeting = await fetch_first(transaction, _MEETING, {"meeting_id": "m1"})
        async with db.read() as session:
            by_orm = await session.get(Upload, "u1")
            meeting_by_orm = await session.get(Meeting, "m1")
        await db.close()
        assert by_orm is not None and meeting_by_orm is not None
        return prepared, meeting, by_orm, meeting_by_orm

    prepared, meeting, by_orm, meeting_by_orm = asyncio.run(main())
    assert prepared is not None and meeting is not None
    assert prepared == {c.name: getattr(by_orm, c.name) for c in UPLOADS.columns}
    assert prepared["meta"]["name"] == "ä ✓"
    assert prepared["kept_with_meeting"] is True and prepared["terminated_at"] is None
    assert meeting["state"] is MeetingState.RECORDING
    assert meeting == {c.name: getattr(meeting_by_orm, c.name) for c in MEETINGS.columns}
    assert detached(Meeting, meeting).gaps == []


def test_a_new_upload_holds_every_column_as_the_mapped_constructor_would() -> None:
    """`make_upload` builds the object as a loaded row (no instrumented sets, on every POST):
    it must still name every column, or a column added to the model would be missing from
    the INSERT (`upload_store._row`) instead of taking its value."""
    fields: dict[str, Any] = {
        "upload_id": "u1",
        "length": 100,
        "meta": {"track": "mic"},
        "concat": None,
        "concat_parts": None,
        "expires_at": 5.0,
        "owner": "key",
    }
    made = make_upload(**fields)
    by_constructor = Upload(
        id="u1",
        owner="key",
        length=100,
        offset=0,
        meta={"track": "mic"},
        concat=None,
        concat_parts=None,
        created_at=made.created_at,
        expires_at=5.0,
        kept_with_meeting=False,
    )
    columns = {c.name for c in UPLOADS.columns}
    assert columns <= made.__dict__.keys()
    assert {c: getattr(made, c) for c in columns} == {
        c: getattr(by_constructor, c) for c in columns
    }
    made.offset = 100  # and it takes writes as a loaded object does
    assert made.offset == 100


def test_a_duplicate_key_is_sqlalchemys_integrity_error(tmp_path: Path) -> None:
    """What the upload store catches when two creations race (storage/upload_store.py)."""

    async def main() -> list[str]:
        db = await fresh_database(tmp_path)
        async with db.write() as transaction:
            await write(transaction, _INSERT_UPLOAD, _upload_row("u1"))
        with pytest.raises(IntegrityError):
            async with db.write() as transaction:
                await write(transaction, _INSERT_UPLOAD, _upload_row("u2"))
                await write(transaction, _INSERT_UPLOAD, _upload_row("u1"))
        async with db.read() as session:
            ids = [r[0] for r in await session.execute(select(UPLOADS.c.id))]
        await db.close()
        return ids

    # The transaction that failed left nothing behind: u2 is gone with it.
    assert asyncio.run(main()) == ["u1"]


def test_several_rows_are_written_in_one_call_and_counted(tmp_path: Path) -> None:
    async def main() -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        db = await fresh_database(tmp_path)
        async with db.write() as transaction:
            transaction.add(new_meeting(meeting_id="m1", external_id=None, title=None, tracks=[]))
            await transaction.flush()
            written = await write(
                transaction,
                _INSERT_EVENT,
                [
                    {"meeting_id": "m1", "type": f"t{n}", "payload": {"n": n}, "created_at": 1.0}
                    for n in range(3)
                ],
            )
        async with db.read() as session:
            rows = await session.execute(
                select(EVENTS.c.type, EVENTS.c.payload).order_by(EVENTS.c.id)
            )
            events = [(r[0], r[1]) for r in rows]
        await db.close()
        return written, events

    written, events = asyncio.run(main())
    assert events == [("t0", {"n": 0}), ("t1", {"n": 1}), ("t2", {"n": 2})]
    if not on_postgres():  # asyncpg's executemany does not count rows
        assert written == 3


def test_what_the_driver_path_does_not_cover_runs_through_core(tmp_path: Path) -> None:
    """Python-side defaults (a meeting's `tracks`, left out) are Core's to fill in; so is a
    read in a read session on SQLite, which may wait for a scan and keeps its thread (on
    PostgreSQL nothing runs on threads: the read takes the driver path)."""

    async def main() -> tuple[list[str], list[str], dict[str, Any] | None]:
        db = await fresh_database(tmp_path)
        with _through_sqlalchemy() as inserted:
            async with db.write() as transaction:
                await write(
                    transaction,
                    _INSERT_MEETING,
                    {"id": "m1", "owner": "", "state": MeetingState.RECORDING, "created_at": 1.0},
                )
        with _through_sqlalchemy() as read:
            async with db.read() as session:
                meeting = await fetch_first(session, _MEETING, {"meeting_id": "m1"})
        await db.close()
        return inserted, read, meeting

    inserted, read, meeting = asyncio.run(main())
    assert any(s.startswith("INSERT INTO meetings") for s in inserted), inserted
    if on_postgres():
        assert read == [], read
    else:
        assert any(s.startswith("SELECT meetings.id") for s in read), read
    assert meeting is not None and meeting["tracks"] == [] and meeting["gaps"] == []


def test_a_missing_parameter_is_an_error_not_a_null(tmp_path: Path) -> None:
    async def main() -> None:
        db = await fresh_database(tmp_path)
        with pytest.raises(SQLAlchemyError, match="upload_id"):
            async with db.write() as transaction:
                await fetch_first(transaction, _UPLOAD, {"id": "u1"})
        await db.close()

    asyncio.run(main())


def test_an_orm_write_reaches_the_database_before_a_prepared_statement(tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        db = await fresh_database(tmp_path)
        async with db.write() as transaction:
            transaction.add(new_meeting(meeting_id="m1", external_id=None, title=None, tracks=[]))
            meeting = await fetch_first(transaction, _MEETING, {"meeting_id": "m1"})
            await write(transaction, _INSERT_UPLOAD, _upload_row("u1"))
            transaction.add(
                Chunk(
                    meeting_id="m1",
                    track="mic",
                    seq=0,
                    start_ms=0,
                    upload_id="u1",
                    state=ChunkState.CREATED,
                    created_at=1.0,
                )
            )
            chunk = await fetch_first(transaction, _CHUNK, {"upload_id": "u1"})
        await db.close()
        return meeting, chunk

    meeting, chunk = asyncio.run(main())
    assert meeting is not None and meeting["id"] == "m1"
    assert chunk is not None and chunk["state"] is ChunkState.CREATED


def test_a_connection_lost_mid_transaction_is_dropped_and_the_transaction_with_it(
    tmp_path: Path,
) -> None:
    """PostgreSQL: the server ends the connection under a write transaction. The next
    statement on the driver path raises SQLAlchemy's error, marked as an invalidated
    connection (so the pool never hands that connection out again), nothing of the
    transaction is kept, and the next transaction runs on a new connection."""
    if not on_postgres():
        pytest.skip("a lost server connection: PostgreSQL's")
    backend_pid = PreparedStatement(text("SELECT pg_backend_pid() AS pid"))

    async def main() -> tuple[bool, list[str], int, int]:
        db = await fresh_database(tmp_path)
        with pytest.raises(DBAPIError) as raised:
            async with db.write() as transaction:
                await write(transaction, _INSERT_UPLOAD, _upload_row("u1"))
                found = await fetch_first(transaction, backend_pid, {})
                assert found is not None
                async with db.read() as session:
                    await session.execute(
                        text("SELECT pg_terminate_backend(:pid)"), {"pid": found["pid"]}
                    )
                await write(transaction, _INSERT_UPLOAD, _upload_row("u2"))
        async with db.write() as transaction:
            await write(transaction, _INSERT_UPLOAD, _upload_row("u3"))
            after = await fetch_first(transaction, backend_pid, {})
            assert after is not None
        async with db.read() as session:
            ids = [r[0] for r in await session.execute(select(UPLOADS.c.id))]
        await db.close()
        return raised.value.connection_invalidated, ids, found["pid"], after["pid"]

    invalidated, ids, before, after = asyncio.run(main())
    assert invalidated
    assert ids == ["u3"]
    assert after != before
