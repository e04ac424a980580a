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
    Hop,
    IllegalTransition,
    MeetingState,
    StaleState,
    new_chunk,
    new_meeting,
    transition_chunk,
    transition_chunk_through,
    transition_meeting,
)
from storage.upload_store import make_upload
from tests.databases import database_url_for
from tests.sql_trace import statements_sent

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


async def _raced(
    db: Database, source: ChunkState, winner: ChunkState, **move: object
) -> tuple[int, Chunk]:
    """A chunk in `source`, a copy read then, and another writer moving it to `winner`
    after that read: the copy is stale."""
    chunk_id = await _chunk_in(db, source)
    async with db.read() as s:
        stale_copy = await s.get(Chunk, chunk_id)
    async with db.write() as s:
        chunk = await s.get(Chunk, chunk_id)
        await transition_chunk(s, chunk, winner, **move)  # type: ignore[arg-type]
    return chunk_id, stale_copy


def test_compare_and_set_lets_one_of_two_racers_win(tmp_path: Path) -> None:
    async def run() -> None:
        db = await _db(tmp_path)
        chunk_id, stale_copy = await _raced(
            db, ChunkState.QUEUED, ChunkState.TRANSCRIBING, lease_owner="a"
        )
        with pytest.raises(StaleState):
            async with db.write() as s:
                await transition_chunk(s, stale_copy, ChunkState.TRANSCRIBING, lease_owner="b")
        async with db.read() as s:
            assert (await s.get(Chunk, chunk_id)).lease_owner == "a"
        await db.close()

    asyncio.run(run())


async def _events_of(db: Database, chunk_id: int) -> list[tuple[str, str]]:
    async with db.read() as s:
        chunk = await s.get(Chunk, chunk_id)
        events = await s.execute(
            select(Event).where(Event.meeting_id == chunk.meeting_id).order_by(Event.id)
        )
        return [(e.type, e.payload["state"]) for e in events.scalars()]


UPLOADED_THEN_QUEUED = [
    Hop(ChunkState.UPLOADED, "chunk.uploaded", {"bytes": 9}, {"bytes": 9, "uploaded_at": 1.0}),
    Hop(ChunkState.QUEUED, "chunk.queued", None, {"duration_s": 30.0, "queued_at": 2.0}),
]


def test_hops_are_one_write_with_every_event_in_order(tmp_path: Path) -> None:
    """uploading -> uploaded -> queued as the upload path makes it: one UPDATE that sets
    every hop's columns, and both events."""

    async def run() -> None:
        db = await _db(tmp_path)
        chunk_id = await _chunk_in(db, ChunkState.UPLOADING)
        async with db.write() as s:
            chunk = await s.get(Chunk, chunk_id)
            with statements_sent(await s.connection()) as sent:
                await transition_chunk_through(s, chunk, UPLOADED_THEN_QUEUED)
        assert len([s for s in sent if s.startswith("UPDATE chunks")]) == 1, sent
        async with db.read() as s:
            row = await s.get(Chunk, chunk_id)
            assert (row.state, row.bytes, row.uploaded_at) == (ChunkState.QUEUED, 9, 1.0)
            assert (row.duration_s, row.queued_at) == (30.0, 2.0)
        assert await _events_of(db, chunk_id) == [
            ("chunk.uploaded", "uploaded"),
            ("chunk.queued", "queued"),
        ]
        await db.close()

    asyncio.run(run())


def test_a_hop_that_is_illegal_from_the_one_before_writes_nothing(tmp_path: Path) -> None:
    """Each hop is judged from the state the previous one reached: uploading -> queued is
    not a transition, so uploading -> uploaded is not written either."""

    async def run() -> None:
        db = await _db(tmp_path)
        chunk_id = await _chunk_in(db, ChunkState.UPLOADING)
        for hops in (
            [UPLOADED_THEN_QUEUED[1]],  # uploading -> queued
            [UPLOADED_THEN_QUEUED[0], UPLOADED_THEN_QUEUED[0]],  # uploaded -> uploaded
            [*UPLOADED_THEN_QUEUED, Hop(ChunkState.UPLOADED)],  # queued -> uploaded
        ):
            with pytest.raises(IllegalTransition):
                async with db.write() as s:
                    chunk = await s.get(Chunk, chunk_id)
                    await transition_chunk_through(s, chunk, hops)
        async with db.read() as s:
            assert (await s.get(Chunk, chunk_id)).state == ChunkState.UPLOADING
        assert await _events_of(db, chunk_id) == []
        with pytest.raises(ValueError, match="no transition"):
            async with db.write() as s:
                chunk = await s.get(Chunk, chunk_id)
                await transition_chunk_through(s, chunk, [])
        with pytest.raises(ValueError, match="target"):
            async with db.write() as s:
                chunk = await s.get(Chunk, chunk_id)
                await transition_chunk_through(
                    s, chunk, [Hop(ChunkState.UPLOADED, fields={"state": "queued"})]
                )
        await db.close()

    asyncio.run(run())


def test_hops_from_a_state_that_moved_meanwhile_are_stale(tmp_path: Path) -> None:
    """The compare-and-set is on the first hop's source: a chunk cancelled meanwhile stays
    cancelled, and none of the hops' events is logged."""

    async def run() -> None:
        db = await _db(tmp_path)
        chunk_id, stale_copy = await _raced(
            db, ChunkState.UPLOADING, ChunkState.CANCELLED, event="chunk.cancelled"
        )
        with pytest.raises(StaleState):
            async with db.write() as s:
                await transition_chunk_through(s, stale_copy, UPLOADED_THEN_QUEUED)
        async with db.read() as s:
            assert (await s.get(Chunk, chunk_id)).state == ChunkState.CANCELLED
        assert await _events_of(db, chunk_id) == [("chunk.cancelled", "cancelled")]
        await db.close()

    asyncio.run(run())
