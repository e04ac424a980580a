"""An upload reads what it needs in as few statements as it can (each a round trip on
PostgreSQL): a chunk's POST reads its meeting and any chunk at its key in one SELECT
(`job_queue.meeting_and_chunk_at`), its last PATCH the chunk and the state of its track's
previous chunk in one (`chunk_intake._CHUNK_OF_UPLOAD`); each was two. What they decide
is what the two reads decided."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select, update

from storage.job_queue import chunk_at, meeting_and_chunk_at, meeting_at
from storage.models import Chunk
from storage.state_machine import ChunkState
from storage.upload_store import UploadStore
from tests.sql_trace import statements_sent_by
from tests.upload_store_setup import (
    MEETING_ID,
    chunk_upload,
    fresh_database,
    store_with_a_meeting,
)


def _reads_of_chunks(sent: list[str]) -> list[str]:
    return [s for s in sent if s.lstrip().upper().startswith("SELECT") and "FROM chunks" in s]


def _reads_of_meetings_or_chunks(sent: list[str]) -> list[str]:
    return [
        s
        for s in sent
        if s.lstrip().upper().startswith("SELECT") and ("FROM chunks" in s or "FROM meetings" in s)
    ]


async def _upload(store: UploadStore, seq: int) -> list[str]:
    """POST and the one PATCH of chunk `seq`; what the PATCH's commit sent."""
    upload = chunk_upload(seq)
    with statements_sent_by(store.db) as created:
        assert await store.create(upload) is None
    assert len(_reads_of_meetings_or_chunks(created)) == 1, created
    found = await store.get(upload.id)
    assert found is not None
    with statements_sent_by(store.db) as sent:
        assert await store.commit_offset(found, 0, 100, None)
    return list(sent)


def test_the_last_patch_reads_its_chunk_once_and_decides_from_the_previous_state(
    tmp_path: Path,
) -> None:
    async def states_of(store: UploadStore) -> dict[int, ChunkState]:
        async with store.db.read() as session:
            rows = await session.execute(select(Chunk.seq, Chunk.state))
            return {seq: state for seq, state in rows}

    async def main() -> tuple[list[list[str]], dict[int, ChunkState], dict[int, ChunkState]]:
        db = await fresh_database(tmp_path)
        store = await store_with_a_meeting(db, tmp_path)
        sent = [await _upload(store, 0), await _upload(store, 1)]
        first = await states_of(store)
        # Chunk 1 done (set directly: the worker's hops are not what this is about), so
        # chunk 2 finds a done predecessor; chunk 5 finds none (and no gap) and waits.
        async with db.write() as session:
            await session.execute(
                update(Chunk).where(Chunk.seq == 1).values(state=ChunkState.TRANSCRIBED)
            )
        sent += [await _upload(store, 2), await _upload(store, 5)]
        then = await states_of(store)
        await db.close()
        return sent, first, then

    sent, first, then = asyncio.run(main())
    for statements in sent:
        assert len(_reads_of_chunks(statements)) == 1, statements
    assert first == {
        0: ChunkState.QUEUED,  # the first of its track
        1: ChunkState.WAITING,  # 0 is queued, not done
    }
    assert then == {
        **first,
        1: ChunkState.TRANSCRIBED,
        2: ChunkState.QUEUED,  # 1 is done
        5: ChunkState.WAITING,  # no 4 (not given up as a gap either)
    }


def test_a_meeting_and_the_chunk_at_a_key_read_together_are_what_each_read_gives(
    tmp_path: Path,
) -> None:
    async def main() -> list[tuple[object, object, object, object]]:
        db = await fresh_database(tmp_path)
        store = await store_with_a_meeting(db, tmp_path)
        await _upload(store, 0)
        async with db.write() as session:
            # Columns of every type set on the chunk: JSON, floats, text.
            await session.execute(
                update(Chunk)
                .where(Chunk.seq == 0)
                .values(carry_state={"tokens": [1, 2]}, error="x", duration_s=1.5)
            )
        found = []
        async with db.write() as session:
            for meeting_id, seq in ((MEETING_ID, 0), (MEETING_ID, 1), ("nobody", 0)):
                together = await meeting_and_chunk_at(session, meeting_id, "mic", seq)
                apart = (
                    await meeting_at(session, meeting_id),
                    await chunk_at(session, meeting_id, "mic", seq),
                )
                found.append((*together, *apart))
        await db.close()
        return found

    def columns(row: object) -> dict[str, object] | None:
        if row is None:
            return None
        return {c.name: getattr(row, c.name) for c in type(row).__table__.columns}  # type: ignore[attr-defined]

    (chunk_there, no_chunk, no_meeting) = asyncio.run(main())
    meeting, chunk, meeting_apart, chunk_apart = chunk_there
    assert meeting is not None and chunk is not None
    assert columns(meeting) == columns(meeting_apart)
    assert columns(chunk) == columns(chunk_apart)
    assert columns(chunk)["carry_state"] == {"tokens": [1, 2]}  # type: ignore[index]
    assert no_chunk[1] is None and no_chunk[3] is None
    assert columns(no_chunk[0]) == columns(no_chunk[2])
    assert no_meeting == (None, None, None, None)
