"""PostgreSQL connections kept checked out between the uses of the hot path.

Every tus request reads its upload (a point read) and most write one transaction. Each took a
connection from SQLAlchemy's pool and gave it back: the pool's checkout and checkin, the
`Connection` set up around it, a greenlet to start it and another to close it, and for point
reads the autocommit setting made and reset. Measured on asyncpg, that was 90-110 us of CPU
of a point read's 150-165 and of a short transaction's 260-300 (about 0.3 ms of the 3.9 ms
the server spends on one small upload: `bench/README.md`, "Many small uploads"). Kept here, a
connection is handed from one use to the next as it is, as SQLite's write batches keep theirs
(`storage/write_batches.py`).

Only a connection that ended its use cleanly is kept (its transaction committed or rolled
back by its block, nothing raised), at most `keep` of them, and only while the pool is within
its size: then it has connections for everything else (sessions, event feeds, the workers'
queue), and none is kept while requests queue for the pool's. One the server
closed meanwhile (a restart, a terminated backend) is noticed at the next take, without a
round trip (asyncpg has read the closed socket), and closed instead of handed out, as the
pool's checkout does (`storage/database.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def closed_by_server(driver_connection: Any) -> bool:
    """Whether asyncpg saw the server close this connection (its socket; no round trip).
    Another driver's connection is not asked (False): its statements find out."""
    is_closed = getattr(driver_connection, "is_closed", None)
    return callable(is_closed) and bool(is_closed())


def driver_of(connection: AsyncConnection) -> Any:
    """The driver's connection under an open (not invalidated) SQLAlchemy connection."""
    return connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]


def connection_closed_by_server(connection: AsyncConnection) -> bool:
    """`closed_by_server` for an open (not invalidated) SQLAlchemy connection."""
    return closed_by_server(driver_of(connection))


def in_driver_transaction(connection: AsyncConnection) -> bool:
    """Whether asyncpg's last word from the server was "in a transaction" (no round trip): a
    transaction begun on the driver itself (`storage/postgres_transaction.py`), which
    SQLAlchemy does not see. Another driver's connection: False."""
    is_in_transaction = getattr(driver_of(connection), "is_in_transaction", None)
    return callable(is_in_transaction) and bool(is_in_transaction())


def _reusable(connection: AsyncConnection) -> bool:
    if connection.closed or connection.invalidated or connection.in_transaction():
        return False
    return not connection_closed_by_server(connection) and not in_driver_transaction(connection)


async def _close(connection: AsyncConnection) -> None:
    # As `async with connection` ends it: back to the pool, finished even if the caller is
    # cancelled meanwhile (SQLAlchemy runs the close to completion).
    await connection.__aexit__(None, None, None)


async def _discard(connection: AsyncConnection) -> None:
    """A connection not kept: back to the pool. One the server closed is invalidated (the
    pool then drops it instead of resetting it over a closed socket), and so is one still
    inside a transaction begun on the driver (the pool's reset would not end it)."""
    if not connection.closed and not connection.invalidated:
        if connection_closed_by_server(connection) or in_driver_transaction(connection):
            await connection.invalidate()
    await _close(connection)


class KeptConnections:
    def __init__(self, engine: AsyncEngine, keep: int) -> None:
        self._engine = engine
        self._keep = keep
        self._idle: list[AsyncConnection] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one use: a kept one if any is usable, else one from the pool."""
        connection = await self._take()
        kept = False
        try:
            yield connection
            if len(self._idle) < self._keep and self._pool_has_room() and _reusable(connection):
                self._idle.append(connection)
                kept = True
        finally:
            if not kept:  # raised (its state is unknown), or enough are kept
                await _discard(connection)

    def _pool_has_room(self) -> bool:
        """Whether the pool is within its size, this connection counted: then nobody waits
        for one of its connections. Past it (a burst: overflow connections, or every one out
        and requests queued for the next), the connection goes back to the pool, to its
        first waiter. Kept instead, it would go to whoever asks next, ahead of those queued
        in the pool, who could wait for as long as requests keep coming."""
        pool = self._engine.pool
        checked_out, size = getattr(pool, "checkedout", None), getattr(pool, "size", None)
        if not callable(checked_out) or not callable(size):
            return True  # a pool without those counts has no queue either
        return bool(checked_out() <= size())

    async def _take(self) -> AsyncConnection:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: its backend is warm
            if _reusable(connection):
                return connection
            await _discard(connection)
        return await self._engine.connect()

    async def close(self) -> None:
        """Give every kept connection back to the pool (before the engine is disposed)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await _discard(connection)
