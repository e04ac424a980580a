"""Chunks by state for /metrics, kept by triggers (storage/chunk_state_counts.py): upgrading
counts the chunks already there; inserts, state changes and deletes are counted in their own
transaction (a rolled-back one not at all); folding the deltas changes no count."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from storage.chunk_state_counts import chunks_by_state, fold_deltas
from storage.database import Database
from storage.schema import upgrade
from tests.databases import database_url_for


async def _add_chunk(db: Database, seq: int, state: str) -> None:
    async with db.write() as session:
        await session.execute(
            text(
                'INSERT INTO uploads (id, owner, "offset", length, meta, created_at) '
                "VALUES (:upload, '', 10, 10, '{}', 0)"
            ),
            {"upload": f"u{seq}"},
        )
        await session.execute(
            text(
                "INSERT INTO chunks (meeting_id, track, seq, start_ms, upload_id, state, "
                "attempts, next_attempt_at, created_at, carry_samples, carry_done) "
                "VALUES ('m1', 'mic', :seq, 0, :upload, :state, 0, 0, 0, 0, false)"
            ),
            {"seq": seq, "upload": f"u{seq}", "state": state},
        )


async def _counted(db: Database) -> tuple[dict[str, int], dict[str, int]]:
    """(what the counts say, what counting the chunks says)"""
    async with db.read() as session:
        kept = await chunks_by_state(session)
        rows = await session.execute(text("SELECT state, count(*) FROM chunks GROUP BY state"))
        return kept, {state: n for state, n in rows.all()}


async def _set_state(db: Database, seq: int, state: str) -> None:
    async with db.write() as session:
        await session.execute(
            text("UPDATE chunks SET state = :state WHERE seq = :seq"), {"state": state, "seq": seq}
        )


def test_counts_follow_every_change_and_survive_folding(tmp_path: Path) -> None:
    async def run() -> None:
        (tmp_path / "data").mkdir()
        db = Database(database_url_for(tmp_path / "data"))
        try:
            await upgrade(db, "0006")
            async with db.write() as session:
                await session.execute(
                    text(
                        "INSERT INTO meetings (id, owner, tracks, gaps, state, created_at, "
                        "last_served_at) VALUES ('m1', '', '[]', '[]', 'recording', 0, 0)"
                    )
                )
            for seq, state in enumerate(["transcribed", "transcribed", "queued"]):
                await _add_chunk(db, seq, state)
            await upgrade(db)  # counts what is there
            kept, counted = await _counted(db)
            assert kept == counted == {"transcribed": 2, "queued": 1}

            await _add_chunk(db, 3, "created")
            await _set_state(db, 2, "transcribing")
            await _set_state(db, 3, "uploading")
            await _set_state(db, 0, "transcribed")  # no change of state: no delta
            try:
                async with db.write() as session:
                    await session.execute(text("UPDATE chunks SET state = 'failed'"))
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            kept, counted = await _counted(db)
            assert kept == counted == {"transcribed": 2, "transcribing": 1, "uploading": 1}

            await fold_deltas(db)
            async with db.read() as session:
                left = (
                    await session.execute(text("SELECT count(*) FROM chunk_state_deltas"))
                ).scalar_one()
            assert left == 0
            kept, counted = await _counted(db)
            assert kept == counted

            async with db.write() as session:
                await session.execute(text("DELETE FROM chunks WHERE seq IN (1, 3)"))
            await fold_deltas(db)
            await fold_deltas(db)  # nothing to fold: nothing changes
            kept, counted = await _counted(db)
            assert kept == counted == {"transcribed": 1, "transcribing": 1}
        finally:
            await db.close()

    asyncio.run(run())
