"""Admission reads the backlog once for every check that asks while a read is under way, and
afresh for a check that comes alone; a caller that goes away does not stop the read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server import admission as admission_module
from server.admission import Admission
from server.errors import ApiError
from storage.backlog import Backlog
from storage.database import Database
from storage.local_blobs import LocalBlobStore
from storage.schema import upgrade
from tests.databases import database_url_for


def _admission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: list[float], over: bool):
    async def slow_read(_db: Database, now: float) -> Backlog:
        reads.append(now)
        await asyncio.sleep(0.2)  # long enough for the others to arrive meanwhile
        return Backlog(workable_audio_s=100.0 if over else 0.0)

    monkeypatch.setattr(admission_module, "read_backlog", slow_read)

    async def recent_rtf(_db: Database) -> float:
        return 0.1

    monkeypatch.setattr(admission_module, "read_recent_rtf", recent_rtf)
    db = Database(database_url_for(tmp_path))
    return db, Admission(
        db,
        max_backlog_s=50.0,
        workers=lambda: 1,
        ready_workers=lambda: 1,
        blobs=LocalBlobStore(tmp_path / "blobs"),
    )


def test_checks_at_once_share_one_read_and_a_later_one_reads_again(tmp_path, monkeypatch):
    reads: list[float] = []
    db, admission = _admission(tmp_path, monkeypatch, reads, over=False)

    async def run() -> None:
        await upgrade(db)
        await asyncio.gather(*(admission.check_new_meeting() for _ in range(50)))
        assert len(reads) == 1
        await admission.check_new_meeting()  # alone: what it sees is read after it asked
        assert len(reads) == 2
        await db.close()

    asyncio.run(run())


def test_every_check_sharing_a_read_is_refused_with_it(tmp_path, monkeypatch):
    reads: list[float] = []
    db, admission = _admission(tmp_path, monkeypatch, reads, over=True)

    async def run() -> list[BaseException | None]:
        await upgrade(db)
        results = await asyncio.gather(
            *(admission.check_new_meeting() for _ in range(5)), return_exceptions=True
        )
        await db.close()
        return results

    results = asyncio.run(run())
    assert len(reads) == 1
    assert all(isinstance(r, ApiError) and "limit 50 s" in str(r) for r in results), results


def test_a_caller_that_goes_away_does_not_stop_the_read_of_the_others(tmp_path, monkeypatch):
    reads: list[float] = []
    db, admission = _admission(tmp_path, monkeypatch, reads, over=False)

    async def run() -> None:
        await upgrade(db)
        first = asyncio.create_task(admission.check_new_meeting())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(admission.check_new_meeting())
        await asyncio.sleep(0.05)
        first.cancel()
        await second  # answered by the read the first one started
        assert first.cancelled() and len(reads) == 1
        await db.close()

    asyncio.run(run())
