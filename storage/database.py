"""Async database access shared by the server and the worker processes.

SQLite (the embedded default) runs in WAL mode. Write transactions start with
BEGIN IMMEDIATE so that two processes never both read a row and then race to
update it: SQLite would otherwise fail the second writer at once with
SQLITE_BUSY instead of waiting for the lock. PostgreSQL (asyncpg) runs at READ
COMMITTED: writers there rely on compare-and-set updates and row locks instead.
The schema itself is `storage.schema`'s job (Alembic migrations).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, UOWTransaction

from storage import sqlite_connection
from storage.models import Base, Event
from storage.write_batches import WriteBatches

SQLITE_BUSY_TIMEOUT_S = 30.0

# What the database driver raises (a malformed URL, an unreachable server, a failed query),
# for callers outside `storage`, which do not import sqlalchemy.
DatabaseError = SQLAlchemyError


def printable_url(url: str) -> str:
    """The URL to show in a message: never its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'rollscribe.db').resolve()}"


def _sqlite_engine(url: str, begin: str, inline: bool = False) -> AsyncEngine:
    path = make_url(url).database or ":memory:"
    engine = create_async_engine(
        url, async_creator=sqlite_connection.connector(path, SQLITE_BUSY_TIMEOUT_S, inline)
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed offset survives power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)
        if begin == "BEGIN IMMEDIATE":
            # This process holds the write lock now: the transaction's statements run inline.
            conn.connection.driver_connection.holds_write_lock = True

    return engine


# Readers of the event log (SSE replay, the webhook fan-out cursor) take "id > last seen".
# PostgreSQL hands ids out at insert time but transactions commit in any order, so a reader
# that saw event 11 would never see an event 10 committed a moment later. Write sessions on
# PostgreSQL therefore hold their events back and insert them at commit, under one
# transaction lock: ids then follow commit order. Nothing else is done while the lock is
# held, so it cannot take part in a deadlock. (SQLite writers are serial already.)
EVENT_ORDER_LOCK = 0x65766E74  # "evnt"
# Notified by every PostgreSQL transaction that logs events, at its commit (event feeds of
# every process LISTEN to it: storage/event_feed.py).
EVENTS_CHANNEL = "rollscribe_events"


class OrderedEventsSession(Session):
    pass


@event.listens_for(OrderedEventsSession, "before_flush")
def _hold_back_events(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    if session.info.get("inserting_events"):
        return
    held = [obj for obj in session.new if isinstance(obj, Event)]
    for obj in held:
        session.expunge(obj)
    session.info.setdefault("held_events", []).extend(held)


@event.listens_for(OrderedEventsSession, "before_commit")
def _insert_events_in_commit_order(session: Session) -> None:
    session.flush()  # everything else first, so that only the inserts run under the lock
    held = session.info.pop("held_events", [])
    if not held:
        return
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_ORDER_LOCK})
    session.info["inserting_events"] = True
    try:
        session.add_all(held)
        session.flush()
    finally:
        session.info.pop("inserting_events", None)
    # Delivered when (and only if) the transaction commits.
    session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": EVENTS_CHANNEL})


@event.listens_for(OrderedEventsSession, "after_rollback")
def _drop_held_events(session: Session) -> None:
    session.info.pop("held_events", None)


class Database:
    """Two session factories: `read()` for queries, `write()` for transactions that change rows."""

    def __init__(self, url: str) -> None:
        # The usual libpq spelling means asyncpg here: the server is async all the way.
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                url = "postgresql+asyncpg://" + url.removeprefix(plain)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._read_engine = _sqlite_engine(url, "BEGIN")
            self._point_read_engine = _sqlite_engine(url, "BEGIN", inline=True)
            self._write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
        else:
            self._read_engine = create_async_engine(url, pool_pre_ping=True)
            self._point_read_engine = self._read_engine
            self._write_engine = self._read_engine
        self._read = async_sessionmaker(self._read_engine, expire_on_commit=False)
        # PostgreSQL's write sessions; on SQLite they come from the write batches below.
        self._write = async_sessionmaker(
            self._write_engine, expire_on_commit=False, sync_session_class=OrderedEventsSession
        )
        # Called after a write transaction that logged events has committed.
        self.on_events_committed: list[Callable[[], None]] = []
        # SQLite has one writer at a time. Left to its busy handler, every waiting
        # transaction of every process sleeps and retries, and under load a process can
        # starve past the busy timeout ("database is locked"); queued here, a process offers
        # one transaction at a time, and those that queue up share it (group commit).
        self._batches = WriteBatches(self._write_engine) if self.is_sqlite else None

    @property
    def write_engine(self) -> AsyncEngine:
        return self._write_engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read() as session:
            yield session

    @asynccontextmanager
    async def point_read(self) -> AsyncIterator[AsyncConnection]:
        """For a few Core lookups by key, nothing that scans: on SQLite they run on the event
        loop's thread, without the trips to a connection thread (storage/sqlite_connection).
        A connection, not a session: no identity map or unit of work to set up and tear down
        for what is one SELECT on every tus request."""
        async with self._point_read_engine.connect() as connection:
            yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        async with self._transaction() as session:
            yield session
        if session.info.get("logged_events"):
            for callback in self.on_events_committed:
                callback()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        if self._batches is not None:
            async with self._batches.transaction() as session:
                yield session
            return
        async with self._write() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.read() as session:
            await session.execute(Base.metadata.tables["meetings"].select().limit(1))

    async def close(self) -> None:
        if self._batches is not None:
            await self._batches.close()
        await self._read_engine.dispose()
        if self._write_engine is not self._read_engine:
            await self._write_engine.dispose()
            await self._point_read_engine.dispose()
