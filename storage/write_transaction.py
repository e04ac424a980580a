"""A write transaction as storage code sees it: Core statements run on the transaction's
connection, and an ORM session is opened on that same connection only for the writes that
need one (`get`, `add`, a select of mapped objects).

Why not an ORM session around every write transaction, as before: the tus hot path (an
upload's creation, its offset's commit) writes with Core statements only, and the session's
machinery around them (its begin, its joining of the connection, a flush and a commit hook
at the end, its close) cost about as much CPU as the statements themselves: 100 to 300 us a
transaction in-process, two transactions per upload (`bench/README.md`, "Many small
uploads"). What the session gave those writes is kept here: the events and byte counts
logged in the transaction are written at its end (`storage/commit_time_writes.py`), and an
ORM object added earlier is flushed before the next Core statement (the session's
autoflush), so statement order is what the code says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from sqlalchemy import Executable, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.commit_time_writes import drop_pending, write_pending


def _is_orm(statement: Executable) -> bool:
    # The test SQLAlchemy's Session.execute makes itself: statements that name mapped
    # classes compile with the ORM's plugin (and return objects, not rows).
    return statement._propagate_attrs.get("compile_state_plugin") == "orm"


class WriteTransaction:
    """Lives for one transaction (or one member's savepoint of a group commit); made by
    `write_transaction_on`, which finishes or discards it."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._session: AsyncSession | None = None
        # What the transaction logged and counted (storage/commit_time_writes.py), and
        # anything else its code wants to note for after the commit.
        self.info: dict[str, Any] = {}

    def _orm(self) -> AsyncSession:
        # Creating the session needs no I/O (`add` is not a coroutine on AsyncSession either).
        if self._session is None:
            # In a savepoint of its own: a flush that fails rolls back to it (the ORM's own
            # way), leaving the caller's transaction to the caller; `finish` releases it.
            self._session = AsyncSession(
                bind=self._connection,
                join_transaction_mode="create_savepoint",
                expire_on_commit=False,
            )
        return self._session

    async def _flush(self) -> None:
        if self._session is not None:
            await self._session.flush()

    async def connection(self) -> AsyncConnection:
        """For Core statements; what an ORM write added before is in the database first."""
        await self._flush()
        return self._connection

    async def execute(
        self, statement: Executable, params: dict[str, Any] | Sequence[dict[str, Any]] | None = None
    ) -> Result[Any]:
        if _is_orm(statement):
            return await self._orm().execute(statement, params)
        await self._flush()
        return await self._connection.execute(statement, params)

    async def get(self, entity: type[Any], ident: Any) -> Any:
        return await self._orm().get(entity, ident)

    def add(self, instance: object) -> None:
        self._orm().add(instance)

    def add_all(self, instances: Sequence[object]) -> None:
        self._orm().add_all(instances)

    async def delete(self, instance: object) -> None:
        await self._orm().delete(instance)

    async def flush(self) -> None:
        await self._flush()

    async def finish(self, write_logged: bool = True) -> None:
        """Before the commit: the ORM's pending writes, then the events and counts logged
        (unless the commit writes those itself: `storage/postgres_transaction.py`)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.commit()  # a flush and RELEASE of its savepoint, not a COMMIT
            await session.close()
        if write_logged:
            await write_pending(self._connection, self.info)

    async def discard(self) -> None:
        """Before a rollback: nothing logged is written."""
        drop_pending(self.info)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()  # rolls back to its savepoint


@asynccontextmanager
async def write_transaction_on(connection: AsyncConnection) -> AsyncIterator[WriteTransaction]:
    """The write transaction of a connection its caller has begun (a transaction, or a
    savepoint of one): at the block's end what it logged is written, before the caller
    commits; if the block raises, nothing is, and the caller rolls back."""
    transaction = WriteTransaction(connection)
    try:
        yield transaction
        await transaction.finish()
    except BaseException:
        await transaction.discard()
        raise


# What a storage function that reads or writes is handed: a read session, or a write
# transaction (both execute statements and load mapped objects by key).
Transaction: TypeAlias = AsyncSession | WriteTransaction
