"""What a worker's claim reads (storage/job_queue.py, migration 0011). The tail claim (a
carry's flush) finds the pending carries through a partial index: it walked every transcribed
chunk, 0.2-0.6 s a claim with a million of them on SQLite, five times a second per idle
worker. A claim with nothing to take asks two point reads first and opens no write
transaction (on SQLite, the file's write lock that every upload's commit waits for)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite

from storage import job_queue
from storage.database import Database
from storage.schema import upgrade
from tests.databases import database_url_for

NOW = 1.0e9


def _statements() -> dict[str, Any]:
    return {
        "tail claim": job_queue.tail_candidates(NOW),
        "carry claimable": job_queue.CARRY_CLAIMABLE.statement,
        "queued due": job_queue.QUEUED_DUE.statement,
    }


def _literal(statement: Any, dialect: Any) -> str:
    bound = statement.params(now=NOW) if "now" in statement.compile().params else statement
    return str(bound.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


async def _fill(db: Database, transcribed: int) -> None:
    """A meeting with `transcribed` chunks whose carries are all consumed, as a long-running
    server holds them (rows written directly)."""
    async with db.write() as session:
        await session.execute(
            text(
                "INSERT INTO meetings (id, owner, tracks, state, gaps, created_at, last_served_at)"
                " VALUES ('m_long', '', '[\"mic\"]', 'recording', '[]', 0, 0)"
            )
        )
        rows = [{"seq": seq, "upload": f"u{seq}", "at": float(seq)} for seq in range(transcribed)]
        await session.execute(
            text(
                'INSERT INTO uploads (id, owner, "offset", length, meta, created_at,'
                " kept_with_meeting) VALUES (:upload, '', 4, 4, '{}', 0, true)"
            ),
            rows,
        )
        await session.execute(
            text(
                "INSERT INTO chunks (meeting_id, track, seq, start_ms, upload_id, state, attempts,"
                " next_attempt_at, created_at, transcribed_at, carry_samples, carry_done)"
                " VALUES ('m_long', 'mic', :seq, 0, :upload, 'transcribed', 1, 0, 0, :at, 0,"
                " true)"
            ),
            rows,
        )
    async with db.write() as session:
        await session.execute(text("ANALYZE"))


def _plans(tmp_path: Path) -> dict[str, list[str]]:
    async def main() -> dict[str, list[str]]:
        db = Database(database_url_for(tmp_path))
        try:
            await upgrade(db)
            await _fill(db, 20_000)
            dialect = sqlite.dialect() if db.is_sqlite else postgresql.dialect()
            explain = "EXPLAIN QUERY PLAN" if db.is_sqlite else "EXPLAIN"
            plans = {}
            async with db.read() as session:
                for name, statement in _statements().items():
                    rows = await session.execute(text(f"{explain} {_literal(statement, dialect)}"))
                    plans[name] = [str(row[-1] if db.is_sqlite else row[0]) for row in rows]
            return plans
        finally:
            await db.close()

    return asyncio.run(main())


def _reads_of_chunks(plan: list[str]) -> list[str]:
    """The plan's steps that read the chunks table (SQLite's SCAN/SEARCH lines, PostgreSQL's
    scan nodes)."""
    return [step for step in plan if re.search(r"(SCAN|SEARCH) chunks\b| on chunks\b", step)]


def test_the_claims_read_through_their_indexes(tmp_path: Path) -> None:
    plans = _plans(tmp_path)
    for name in ("tail claim", "carry claimable"):
        reads = _reads_of_chunks(plans[name])
        assert reads and all("ix_chunks_carry_pending" in step for step in reads), plans
    reads = _reads_of_chunks(plans["queued due"])
    assert reads and all("ix_chunks_claim" in step for step in reads), plans


def test_a_claim_with_nothing_to_take_opens_no_write_transaction(tmp_path: Path) -> None:
    async def main() -> tuple[int, Any, int, Any]:
        db = Database(database_url_for(tmp_path))
        writes = 0
        write = db.write

        def counted_write() -> Any:
            nonlocal writes
            writes += 1
            return write()

        db.write = counted_write  # type: ignore[method-assign]
        try:
            await upgrade(db)
            await _fill(db, 3)
            writes = 0
            nothing = await job_queue.claim_next_job(db, "w:1", 30.0)
            idle_writes = writes
            async with write() as session:
                await session.execute(
                    text(
                        "UPDATE chunks SET state = 'queued', attempts = 0, queued_at = 1"
                        " WHERE seq = 2"
                    )
                )
            writes = 0
            job = await job_queue.claim_next_job(db, "w:1", 30.0)
            return idle_writes, nothing, writes, job
        finally:
            await db.close()

    idle_writes, nothing, writes, job = asyncio.run(main())
    assert nothing is None and idle_writes == 0
    assert job is not None and job.seq == 2 and writes == 1
