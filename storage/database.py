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

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from storage import sqlite_connection
from storage.models import Base
from storage.write_batches import WriteBatches
from storage.write_transaction import WriteTransaction, write_transaction_on

SQLITE_BUSY_TIMEOUT_S = 30.0
# PostgreSQL connections a process keeps open, and how many more it may open under a burst
# (those are closed again when returned to a full pool). With SQLAlchemy's default of 5, one
# of them held for the process's life by the upload locks, 200 uploading clients made a
# process open and close a connection for about every fourth upload (a backend started,
# authentication, the dialect's setup): 20 kept them at 13-36 per 2,000 uploads, and served
# 41 % more requests/s with 17 % less CPU per upload (A/B, `bench/README.md`, "Many small
# uploads"). A process opens at most 30 at once: with `--processes N`, PostgreSQL's
# `max_connections` must allow N times that (its default of 100 allows three).
POSTGRES_POOL_SIZE = 20
POSTGRES_POOL_OVERFLOW = 10

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


def _sqlite_engine(url: str, begin: str | None, inline: bool = False) -> AsyncEngine:
    """`begin`: the statement that starts a transaction; None for a connection whose every
    statement is a transaction of its own (SQLite's autocommit)."""
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
        if begin is None:
            return
        conn.exec_driver_sql(begin)
        if begin == "BEGIN IMMEDIATE":
            # This process holds the write lock now: the transaction's statements run inline.
            conn.connection.driver_connection.holds_write_lock = True

    return engine


class Database:
    """`read()` for queries (an ORM session), `point_read()` for one SELECT by key (a Core
    connection), `write()` for transactions that change rows (`WriteTransaction`)."""

    def __init__(self, url: str) -> None:
        # The usual libpq spelling means asyncpg here: the server is async all the way.
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                url = "postgresql+asyncpg://" + url.removeprefix(plain)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._read_engine = _sqlite_engine(url, "BEGIN")
            # A point read is one SELECT, consistent by itself: no BEGIN before it and no
            # ROLLBACK after it (two calls of the three, on every tus request).
            self._point_read_engine = _sqlite_engine(url, None, inline=True)
            self._write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
        else:
            self._read_engine = create_async_engine(
                url,
                pool_pre_ping=True,
                pool_size=POSTGRES_POOL_SIZE,
                max_overflow=POSTGRES_POOL_OVERFLOW,
            )
            # One SELECT needs no transaction: without one, a point read is the SELECT's
            # round trip (and the pool's ping) instead of BEGIN, SELECT and ROLLBACK too.
            # The same pool; asyncpg only skips the BEGIN.
            self._point_read_engine = self._read_engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )
            self._write_engine = self._read_engine
        self._read = async_sessionmaker(self._read_engine, expire_on_commit=False)
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
        if not self.is_sqlite:
            async with self._point_read_engine.connect() as connection:
                yield connection
            return
        # Not `async with`: its exit closes the connection under `asyncio.shield`, a task and
        # a trip through the loop, and under load the connection stays checked out for that
        # trip. 200 uploading clients then held 11 to 15 at once, past the pool's 5, and the
        # pool opened and closed a connection (a thread, three files, the schema read) for
        # about every third upload. Here every call runs on the loop's thread (an inline
        # connection) and the check-in is one call too: nothing yields, one connection serves.
        connection = await self._point_read_engine.connect()
        try:
            yield connection
        finally:
            await connection.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTransaction]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        async with self._transaction() as transaction:
            yield transaction
        if transaction.info.get("logged_events"):
            for callback in self.on_events_committed:
                callback()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[WriteTransaction]:
        if self._batches is not None:
            async with self._batches.transaction() as transaction:
                yield transaction
            return
        async with (
            self._write_engine.connect() as connection,
            connection.begin(),
            write_transaction_on(connection) as transaction,
        ):
            yield transaction

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
