"""Every legal chunk and meeting transition, illegal ones refused, and compare-and-set races."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.database import Database
from storage.models import Chunk, Event, Meeting
from storage.schema import upgrade
from storage.state_machine import (
    CHUNK_TRANSITIONS,
    MEETING_TRANSITIONS,
    ChunkState,
    IllegalTransition,
    MeetingState,
    StaleState,
    new_chunk,
    new_meeting,
    transition_chunk,
    transition_meeting,
)
from storage.upload_store import make_upload
from tests.databases import database_url_for

_ids = itertools.count()


async def _db(tmp_path: Path) -> Database:
    db = Database(database_url_for(tmp_path))
    await upgrade(db)
    return db


async def _chunk_in(db: Database, state: ChunkState) -> int:
    n = next(_ids)
    async with db.write() as s:
        s.add(new_meeting(meeting_id=f"m{n}", external_id=None, title=None, tracks=[]))
        s.add(
            make_upload(
                upload_id=f"upload{n:08d}",
                length=1,
                meta={},
                concat=None,
                concat_parts=None,
                expires_at=None,
            )
        )
        await s.flush()
        chunk = new_chunk(
            meeting_id=f"m{n}", track="t", seq=0, start_ms=0, upload_id=f"upload{n:08d}"
        )
        s.add(chunk)
        await s.flush()
        chunk.state = state.value  # test setup only: place the row in the state under test
        return chunk.id


def test_every_legal_chunk_transition(tmp_path: Path) -> None:
    async def run() -> int:
        db = await _db(tmp_path)
        count = 0
        for source, targets in CHUNK_TRANSITIONS.items():
            for target in targets:
                chunk_id = await _chunk_in(db, source)
                async with db.write() as s:
                    chunk = await s.get(Chunk, chunk_id)
                    await transition_chunk(s, chunk, target, event="test.moved")
                async with db.read() as s:
                    assert (await s.get(Chunk, chunk_id)).state == target.value
                    events = (
                        (await s.execute(select(Event).where(Event.meeting_id == chunk.meeting_id)))
                        .scalars()
                        .all()
                    )
                    assert [e.payload["state"] for e in events] == [target.value]
                count += 1
        await db.close()
        return count

    assert asyncio.run(run()) == sum(len(t) for t in CHUNK_TRANSITIONS.values())


def test_illegal_chunk_transitions_are_refused(tmp_path: Path) -> None:
    async def run() -> int:
        db = await _db(tmp_path)
        refused = 0
        for source in ChunkState:
            for target in set(ChunkState) - CHUNK_TRANSITIONS[source]:
                chunk_id = await _chunk_in(db, source)
                with pytest.raises(IllegalTransition):
                    async with db.write() as s:
                        chunk = await s.get(Chunk, chunk_id)
                        await transition_chunk(s, chunk, target)
                async with db.read() as s:
                    assert (await s.get(Chunk, chunk_id)).state == source.value
                refused += 1
        await db.close()
        return refused

    # e.g. transcribed -> queued, created -> transcribing, rejected -> anything
    assert asyncio.run(run()) > 50


def test_terminal_chunk_states_have_no_exit() -> None:
    assert CHUNK_TRANSITIONS[ChunkState.TRANSCRIBED] == frozenset()
    assert CHUNK_TRANSITIONS[ChunkState.REJECTED] == frozenset()


def test_meeting_transitions(tmp_path: Path) -> None:
    async def run() -> None:
        db = await _db(tmp_path)
        for source in MeetingState:
            for target in MeetingState:
                n = next(_ids)
                async with db.write() as s:
                    m = new_meeting(meeting_id=f"x{n}", external_id=None, title=None, tracks=[])
                    m.state = source.value
                    s.add(m)
                legal = target in MEETING_TRANSITIONS[source]
                try:
                    async with db.write() as s:
                        meeting = await s.get(Meeting, f"x{n}")
                        await transition_meeting(s, meeting, target)
                    assert legal, (source, target)
                except IllegalTransition:
                    assert not legal, (source, target)
        await db.close()

    asyncio.run(run())


def test_compare_and_set_lets_one_of_two_racers_win(tmp_path: Path) -> None:
    async def run() -> None:
        db = await _db(tmp_path)
        chunk_id = await _chunk_in(db, ChunkState.QUEUED)
        async with db.read() as s:
            stale_copy = await s.get(Chunk, chunk_id)
        async with db.write() as s:
            chunk = await s.get(Chunk, chunk_id)
            await transition_chunk(s, chunk, ChunkState.TRANSCRIBING, lease_owner="a")
        with pytest.raises(StaleState):
            async with db.write() as s:
                await transition_chunk(s, stale_copy, ChunkState.TRANSCRIBING, lease_owner="b")
        async with db.read() as s:
            assert (await s.get(Chunk, chunk_id)).lease_owner == "a"
        await db.close()

    asyncio.run(run())
