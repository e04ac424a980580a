"""A write transaction on PostgreSQL (asyncpg) whose last statement and COMMIT are one round trip.

Every transaction that logs events writes them last, holding the event-order lock until its
COMMIT (`storage/commit_time_writes.py`). Ended by SQLAlchemy, that statement and the COMMIT
are two round trips: the lock stays held while the statement's answer travels back and the
server's event loop gets round to sending COMMIT, which under load is most of the lock's
time. Sampled under 200 uploading clients, the backend holding it sat idle in transaction
about half the time, and four backends on average waited for it: every upload's
transactions took turns at the speed of the server's event loop (`bench/README.md`, "Many
small uploads"). Here the transaction's end is one query (`commit_time_writes.
postgres_commit`): the lock is held for PostgreSQL's own work only.

SQLAlchemy's asyncpg adapter begins and ends transactions through asyncpg's `Transaction`,
which sends COMMIT alone, so these transactions run on a connection in SQLAlchemy's
autocommit mode (the adapter then begins none) and begin and end themselves: BEGIN when
they start, the commit query when their block ends, ROLLBACK when it raises. A connection
whose transaction could not be rolled back (a statement cancelled half way, a lost
connection) is invalidated: the pool never hands out a connection inside a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection

from storage.commit_time_writes import postgres_commit
from storage.prepared_statements import run_simple_asyncpg
from storage.write_transaction import WriteTransaction

# What SQLAlchemy's adapter begins with (asyncpg's default), spelled out: the server's
# `default_transaction_isolation` may say otherwise.
BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"


@asynccontextmanager
async def postgres_write_transaction(
    connection: AsyncConnection,
) -> AsyncIterator[WriteTransaction]:
    """A transaction on `connection` (autocommit, asyncpg): committed with what it logged when
    the block ends, rolled back if it raises."""
    try:
        # Inside the try: a BEGIN cancelled on its way may still have begun the transaction.
        await run_simple_asyncpg(connection, BEGIN)
        transaction = WriteTransaction(connection)
        try:
            yield transaction
            await transaction.finish(write_logged=False)  # the ORM's writes; the rest below
        except BaseException:
            await transaction.discard()
            raise
        await run_simple_asyncpg(connection, postgres_commit(transaction.info))
    except BaseException:
        # Shielded: a cancelled caller still leaves the connection outside a transaction.
        await asyncio.shield(_roll_back(connection))
        raise


async def _roll_back(connection: AsyncConnection) -> None:
    if connection.closed or connection.invalidated:
        return
    # Sent whatever asyncpg last heard: a statement cancelled half way may still begin or end
    # a transaction, and a ROLLBACK with none open is only a warning. asyncpg sends it once
    # the cancelled statement has settled.
    try:
        await run_simple_asyncpg(connection, "ROLLBACK")
    except Exception as error:
        # Busy with a cancelled statement, or gone: nobody may use it again.
        with contextlib.suppress(Exception):
            await connection.invalidate(error)
