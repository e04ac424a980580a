"""The expiry sweep reads only uploads that may expire: an upload whose chunk was accepted
is marked kept with its meeting when its last bytes are recorded, and the sweep's read
goes through a partial index that leaves those out. (It probed every upload ever kept on
every sweep: 478 ms every 2 s with a million chunks, a quarter of a core for an idle
server; `bench/README.md`, "An idle server with a million chunks".)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite

from storage.database import Database
from storage.schema import head_revision, upgrade
from storage.upload_store import UploadStore, expiry_candidates
from tests.conftest import PROTOCOL_ARGS, create_meeting, metadata, tus_create, tus_patch
from tests.databases import database_url_for, on_postgres
from tests.in_process_server import InProcessServer
from tests.test_hostile_chunks import _ogg
from tests.test_schema import _at_revision, _run_sql

FAR_FUTURE = time.time() + 10**9


def _upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def _flags_and_expired(url: str) -> tuple[dict[str, bool], set[str]]:
    db = Database(url)
    try:
        async with db.read() as session:
            rows = await session.execute(text("SELECT id, kept_with_meeting FROM uploads"))
            flags = {upload_id: bool(kept) for upload_id, kept in rows}
        # Far in the future: every upload that may ever expire is past its expiry.
        expired = {u.id for u in await UploadStore(db, None, None).expired(FAR_FUTURE, 1)}  # type: ignore[arg-type]
        return flags, expired
    finally:
        await db.close()


@pytest.fixture
def quiet_server(tmp_path: Path):
    # No sweep while the test looks at what the uploads left in the database.
    server = InProcessServer(
        tmp_path / "data", extra=[*PROTOCOL_ARGS, "--sweep-interval-seconds", "3600"]
    ).start()
    yield server
    server.stop()


def test_an_accepted_chunk_is_kept_and_every_other_upload_may_expire(quiet_server):
    base = quiet_server.url
    meeting = create_meeting(base, tracks=["mic"])["id"]

    def chunk(seq: int, body: bytes, sent: bytes | None = None) -> str:
        meta = metadata(meeting_id=meeting, track="mic", seq=seq, start_ms=seq * 1000)
        url = tus_create(base, len(body), meta).headers["Location"]
        if sent is not None:
            assert tus_patch(url, 0, sent).status_code == 204
        return _upload_id(url)

    accepted = chunk(0, _ogg(50), _ogg(50))
    accepted_in_two = chunk(1, _ogg(50))
    body = _ogg(50)
    url = f"{base}/files/{accepted_in_two}"
    assert tus_patch(url, 0, body[:100]).status_code == 204
    assert tus_patch(url, 100, body[100:]).status_code == 204
    rejected = chunk(2, b"abcd", b"abcd")  # not Ogg Opus
    unfinished = chunk(3, b"x" * 10, b"x" * 5)
    not_started = chunk(4, b"x" * 10)
    plain = _upload_id(tus_create(base, 3).headers["Location"])
    assert tus_patch(f"{base}/files/{plain}", 0, b"xyz").status_code == 204

    flags, expired = asyncio.run(_flags_and_expired(database_url_for(quiet_server.data_dir)))
    assert flags == {
        accepted: True,
        accepted_in_two: True,
        rejected: False,
        unfinished: False,
        not_started: False,
        plain: False,
    }
    assert expired == {rejected, unfinished, not_started, plain}


@pytest.mark.skipif(on_postgres(), reason="SQLite's query plan")
def test_the_sweeps_read_goes_through_the_partial_index(tmp_path: Path):
    url = database_url_for(tmp_path)

    async def plan() -> list[str]:
        db = Database(url)
        try:
            await upgrade(db)
            statement = expiry_candidates(time.time(), 60).compile(
                dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
            )
            async with db.read() as session:
                rows = await session.execute(text(f"EXPLAIN QUERY PLAN {statement}"))
                return [row[-1] for row in rows]
        finally:
            await db.close()

    steps = asyncio.run(plan())
    uploads = [step for step in steps if " uploads" in step]
    assert uploads and all("ix_uploads_expiring" in step for step in uploads), steps


def test_the_migration_marks_uploads_whose_chunk_is_past_validation(tmp_path: Path):
    data_dir = tmp_path / "data"
    url = _at_revision(data_dir, "0009")
    states = ["created", "uploading", "uploaded", "rejected", "cancelled"]
    states += ["waiting", "queued", "transcribing", "transcribed", "failed"]
    now = time.time()
    asyncio.run(
        _run_sql(
            url,
            *(
                'INSERT INTO uploads (id, owner, "offset", length, meta, created_at) '
                f"VALUES ('u_{state}', '', 4, 4, '{{}}', {now})"
                for state in [*states, "plain"]
            ),
            *(
                "INSERT INTO chunks (meeting_id, track, seq, start_ms, upload_id, state, "
                "attempts, next_attempt_at, created_at, carry_samples, carry_done) VALUES "
                f"('m_old', 'mic', {seq}, 0, 'u_{state}', '{state}', 0, 0, {now}, 0, false)"
                for seq, state in enumerate(states)
            ),
        )
    )

    async def migrate() -> dict[str, bool]:
        db = Database(url)
        try:
            await upgrade(db, head_revision())
            async with db.read() as session:
                rows = await session.execute(text("SELECT id, kept_with_meeting FROM uploads"))
                return {upload_id: bool(kept) for upload_id, kept in rows}
        finally:
            await db.close()

    past_validation = {"waiting", "queued", "transcribing", "transcribed", "failed"}
    assert asyncio.run(migrate()) == {
        f"u_{state}": state in past_validation for state in [*states, "plain"]
    }
