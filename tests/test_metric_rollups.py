"""/metrics histograms kept as rollups (storage/metric_rollups.py): upgrading a database
counts what it already holds, each observation lands in every bucket at or above it, and a
scrape reads the rollup rows, not the chunks."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from storage.database import Database
from storage.metric_rollups import histograms, observe
from storage.schema import upgrade
from tests.databases import database_url_for


def test_upgrading_counts_the_chunks_and_meetings_already_there(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(database_url_for(tmp_path / "data"))
        try:
            await upgrade(db, "0005")
            async with db.write() as session:
                await session.execute(
                    text(
                        "INSERT INTO meetings (id, owner, tracks, gaps, state, created_at, "
                        "last_served_at, finalized_at, completed_at) VALUES "
                        "('m1', '', '[]', '[]', 'complete', 0, 0, 100, 103.5)"
                    )
                )
                for i, (transcribe_s, lag) in enumerate([(0.5, 1.5), (2.0, 40.0), (9.0, 0.5)]):
                    await session.execute(
                        text(
                            'INSERT INTO uploads (id, owner, "offset", length, meta, '
                            "created_at) VALUES (:upload, '', 10, 10, '{}', 0)"
                        ),
                        {"upload": f"u{i}"},
                    )
                    await session.execute(
                        text(
                            "INSERT INTO chunks (meeting_id, track, seq, start_ms, upload_id, "
                            "state, attempts, next_attempt_at, created_at, duration_s, "
                            "uploaded_at, transcribed_at, transcribe_s, carry_samples, "
                            "carry_done) VALUES ('m1', 'mic', :seq, 0, :upload, 'transcribed', "
                            "1, 0, 0, 10.0, 1000, :done, :took, 0, :done_carry)"
                        ),
                        {
                            "seq": i,
                            "upload": f"u{i}",
                            "done": 1000 + lag,
                            "took": transcribe_s,
                            "done_carry": True,
                        },
                    )
            await upgrade(db)
            async with db.read() as session:
                h = await histograms(session)
            rtf = h["transcription_rtf"]  # 0.05, 0.2, 0.9
            assert rtf.count == 3 and abs(rtf.sum - 1.15) < 1e-9
            assert dict(rtf.buckets)[0.05] == 1 and dict(rtf.buckets)[0.2] == 2
            assert dict(rtf.buckets)[0.75] == 2 and dict(rtf.buckets)[1.0] == 3
            lag = h["chunk_lag_s"]  # 1.5, 40, 0.5
            assert lag.count == 3 and dict(lag.buckets)[1] == 1 and dict(lag.buckets)[30] == 2
            end = h["meeting_end_s"]
            assert end.count == 1 and dict(end.buckets)[2] == 0 and dict(end.buckets)[5] == 1
            # New observations add to every bucket at or above them.
            async with db.write() as session:
                await observe(session, "meeting_end_s", 1.0)
            async with db.read() as session:
                end = (await histograms(session))["meeting_end_s"]
            assert end.count == 2 and dict(end.buckets)[1] == 1 and dict(end.buckets)[5] == 2
            assert abs(end.sum - 4.5) < 1e-9
        finally:
            await db.close()

    (tmp_path / "data").mkdir()
    asyncio.run(run())
