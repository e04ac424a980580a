"""A chunk's creation (its POST) racing others of the same key: one chunk, and each loser
answered with the winner's upload. On SQLite the racers share a group commit, and a loser
learns of the winner from the batch's uncommitted rows (storage/write_batches.py raises its
answer only once they are committed); on PostgreSQL they race on the unique key."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from storage.models import Chunk, Upload
from tests.upload_store_setup import (
    chunk_upload,
    fresh_database,
    store_with_a_meeting,
)


def test_creations_of_one_key_at_once_make_one_chunk(tmp_path: Path) -> None:
    """Ten POSTs of one chunk key at once (a client retrying on several connections): one
    upload and one chunk; the nine others answered with that upload, no row of theirs
    left. On PostgreSQL those that read the key free race on its unique index."""

    async def main() -> tuple[list[object], list[str], int]:
        db = await fresh_database(tmp_path)
        store = await store_with_a_meeting(db, tmp_path)
        uploads = [chunk_upload(3) for _ in range(10)]
        answers = await asyncio.gather(*(store.create(upload) for upload in uploads))
        async with db.read() as session:
            upload_ids = list((await session.execute(select(Upload.id))).scalars())
            chunks = len((await session.execute(select(Chunk.id))).all())
        await db.close()
        return answers, upload_ids, chunks

    answers, upload_ids, chunks = asyncio.run(main())
    assert len(upload_ids) == 1 and chunks == 1
    winner = upload_ids[0]
    assert answers.count(None) == 1
    assert sorted(a.id for a in answers if a is not None) == [winner] * 9  # type: ignore[attr-defined]
