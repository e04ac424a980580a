"""Async database access shared by the server and the worker processes.

SQLite (the embedded default) runs in WAL mode. Write transactions start with
BEGIN IMMEDIATE so that two processes never both read a row and then race to
update it: SQLite would otherwise fail the second writer at once with
SQLITE_BUSY instead of waiting for the lock. PostgreSQL (asyncpg) runs at READ
COMMITTED: writers there rely on compare-and-set updates and row locks instead.
The schema itself is `storage.schema`'s job (Alembic migrations).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from storage import sqlite_connection
from storage.database_outage import DatabaseUnreachable
from storage.kept_connections import KeptConnections, closed_by_server
from storage.models import Base
from storage.postgres_transaction import postgres_write_transaction
from storage.prepared_statements import PreparedStatement, fetch_first
from storage.write_batches import WriteBatches
from storage.write_transaction import WriteTransaction, write_transaction_on
from storage.writer_queue import WriterQueue

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
# Of those, how many a process keeps checked out between the write transactions and between
# the point reads of the hot path, each (`storage/kept_connections.py`), and only while no
# more than the pool's 20 are out: the pool still serves everything else first come, first
# served when a burst takes it past them.
POSTGRES_KEPT_WRITERS = 8
POSTGRES_KEPT_POINT_READERS = 8
# SQLite keeps a page cache per connection (2 MiB by default), each a copy of pages the
# operating system's file cache holds anyway. The read pool keeps 5 connections between
# bursts (SQLAlchemy's default) and opens up to 10 more during one. Every scan of a large table
# (admission's backlog sum at each new meeting, with tens of thousands of pending chunks) fills
# the cache of the connection that ran it: the server's resident size grew in steps as the kept
# connections took their turns, by up to 10 MiB, and by 30 MiB for as long as a burst held
# them all. 100,000 uploads through one server: +12.6 % RSS with the default, +6.2 % with
# 512 KiB for the read pool (`./dev bench upload_memory`, bench/README.md, "A long-running
# server and many uploads"). The read pool's queries (views, admission, /metrics) find their
# index pages in 512 KiB; a page missed is a read from the file cache, not the disk. The
# writer and the point reader, one connection each on every request's path, keep SQLite's
# default.
SQLITE_READ_POOL_CACHE_KIB = 512

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


def _sqlite_engine(
    url: str, begin: str | None, inline: bool = False, cache_kib: int | None = None
) -> AsyncEngine:
    """`begin`: the statement that starts a transaction; None for a connection whose every
    statement is a transaction of its own (SQLite's autocommit). `cache_kib`: each
    connection's page cache, None for SQLite's default."""
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
        if cache_kib is not None:
            cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # negative: in KiB
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if begin is None:
            return
        if begin == "BEGIN IMMEDIATE":
            # Holding the write lock afterwards, the transaction's statements run inline.
            driver = conn.connection.driver_connection
            try:
                await_only(driver.begin_immediate(int(SQLITE_BUSY_TIMEOUT_S * 1000)))
            except sqlite3.Error as error:  # as Core raises it ("database is locked", ...)
                raise DBAPIError.instance(begin, None, error, sqlite3.Error) from error
            return
        conn.exec_driver_sql(begin)

    return engine


def _postgres_engine(url: str) -> AsyncEngine:
    on_asyncpg = make_url(url).get_driver_name() == "asyncpg"
    engine = create_async_engine(
        url,
        pool_pre_ping=not on_asyncpg,  # another async driver: asked as before
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_POOL_OVERFLOW,
    )

    # The dialect's own connect, with the socket's errors named for what they are: the
    # database unreachable (storage/database_outage.py; SQLAlchemy's documented hook for
    # taking over a connect).
    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except OSError as error:
            raise DatabaseUnreachable(f"cannot connect to the database: {error}") from error

    if not on_asyncpg:
        return engine

    # A connection the server has closed (a restart, a terminated backend) is replaced when
    # the pool hands it out (SQLAlchemy's documented way: raising DisconnectionError at
    # checkout). asyncpg notices a closed socket by itself, so the check costs no round trip.
    # SQLAlchemy's `pool_pre_ping`, used before, asks the server: through its asyncpg
    # adapter a BEGIN, an empty statement and a ROLLBACK, three round trips per checkout and
    # two checkouts per upload (A/B in `bench/README.md`, "Many small uploads"). What only a
    # ping would find, a connection whose peer vanished without closing it (a network cut),
    # fails the statement that finds it, and the connection is dropped then.
    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _replace_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if closed_by_server(dbapi_connection.driver_connection):
            raise DisconnectionError("the database server closed this connection")

    return engine


class Database:
    """`read()` for queries (an ORM session), `read_first()` for one SELECT by key, `write()`
    for transactions that change rows (`WriteTransaction`)."""

    def __init__(self, url: str) -> None:
        # The usual libpq spelling means asyncpg here: the server is async all the way.
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                url = "postgresql+asyncpg://" + url.removeprefix(plain)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._read_engine = _sqlite_engine(url, "BEGIN", cache_kib=SQLITE_READ_POOL_CACHE_KIB)
            # A point read is one SELECT, consistent by itself: no BEGIN before it and no
            # ROLLBACK after it (two calls of the three, on every tus request).
            self._point_read_engine = _sqlite_engine(url, None, inline=True)
            self._write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
        else:
            self._read_engine = _postgres_engine(url)
            # One SELECT needs no transaction: without one, a point read is the SELECT's
            # round trip instead of BEGIN, SELECT and ROLLBACK too. The same pool; asyncpg
            # only skips the BEGIN.
            self._point_read_engine = self._read_engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )
            self._write_engine = self._read_engine
        self._kept_writers: KeptConnections | None = None
        self._kept_point_readers: KeptConnections | None = None
        # asyncpg: write transactions begin and end on the driver, their last statement and
        # COMMIT in one round trip (storage/postgres_transaction.py), on connections in
        # SQLAlchemy's autocommit mode. Another driver: SQLAlchemy's transactions.
        self._commits_on_driver = make_url(url).get_driver_name() == "asyncpg"
        if not self.is_sqlite:
            writers = self._point_read_engine if self._commits_on_driver else self._write_engine
            self._kept_writers = KeptConnections(writers, POSTGRES_KEPT_WRITERS)
            self._kept_point_readers = KeptConnections(
                self._point_read_engine, POSTGRES_KEPT_POINT_READERS
            )
        self._read = async_sessionmaker(self._read_engine, expire_on_commit=False)
        # Called after a write transaction that logged events has committed.
        self.on_events_committed: list[Callable[[], None]] = []
        # SQLite has one writer at a time. Left to its busy handler, every waiting
        # transaction of every process sleeps and retries, and under load a process can
        # starve past the busy timeout ("database is locked"); queued here, a process offers
        # one transaction at a time, and those that queue up share it (group commit).
        self._batches = None
        if self.is_sqlite:
            # Other processes on the same file (`--processes N`, the workers) take turns
            # with this one through a lock that wakes its waiters: storage/writer_queue.
            path = make_url(url).database
            queue = None if path in (None, "", ":memory:") else WriterQueue(Path(path))
            self._batches = WriteBatches(self._write_engine, queue=queue)
        # SQLite: the connection every point read runs on (`read_first`), opened at the first.
        self._point_reader: AsyncConnection | None = None
        self._point_reader_opening = asyncio.Lock()

    @property
    def write_engine(self) -> AsyncEngine:
        return self._write_engine

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read() as session:
            yield session

    async def read_first(
        self, prepared: PreparedStatement, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The first row of one SELECT by key (every tus request reads its upload so), or
        None. No session and no transaction: a point read is consistent by itself.

        On SQLite every such read runs on one connection, held for the database's life: its
        statements run on the event loop's thread (an inline connection,
        storage/sqlite_connection) and never yield, so one connection serves every request,
        and reading never waits for a writer in WAL mode. Checking a pooled connection out
        and in for each read (the pool's bookkeeping, SQLAlchemy's connection set-up and
        reset) was about 6 % of the server's GIL-holding time under 200 uploading clients.
        On PostgreSQL a connection in autocommit, kept between point reads
        (`storage/kept_connections.py`): the SELECT's one round trip."""
        if self._kept_point_readers is not None:
            async with self._kept_point_readers.connection() as connection:
                return await fetch_first(connection, prepared, params or {})
        if self._point_reader is None:
            async with self._point_reader_opening:
                if self._point_reader is None:
                    # The only call that yields: the connection is opened on its thread.
                    self._point_reader = await self._point_read_engine.connect()
        return await fetch_first(self._point_reader, prepared, params or {})

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
        assert self._kept_writers is not None  # PostgreSQL
        if self._commits_on_driver:
            # connection.begin(): SQLAlchemy's own bookkeeping (autocommit: no statement).
            async with (
                self._kept_writers.connection() as connection,
                connection.begin(),
                postgres_write_transaction(connection) as transaction,
            ):
                yield transaction
            return
        async with (
            self._kept_writers.connection() as connection,
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
        if self._point_reader is not None:
            reader, self._point_reader = self._point_reader, None
            await reader.close()
        for kept in (self._kept_writers, self._kept_point_readers):
            if kept is not None:
                await kept.close()
        await self._read_engine.dispose()
        if self._write_engine is not self._read_engine:
            await self._write_engine.dispose()
            await self._point_read_engine.dispose()
