"""What statements a connection sends to its database, for tests that count them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database


def _sqlite_tracer(sent: list[str]) -> Callable[[str], None]:
    def traced(statement: str) -> None:
        # SQLite calls the trace again at the start of each trigger subprogram of the
        # statement (foreign keys' among them), and Python hands over the statement's
        # text each time: one execution, one entry. (Two identical statements one after
        # the other count as one too: the tests compare statements that differ.)
        if not sent or sent[-1] != statement:
            sent.append(statement)

    return traced


@contextmanager
def _asyncpg_prepares(sent: list[str], only: object = None) -> Iterator[None]:
    """Each statement SQLAlchemy's asyncpg adapter prepares (its cache hands the driver
    path and Core their prepared statement; BEGIN and COMMIT are not prepared, so not
    seen): every connection's, or `only` that adapter's; on this thread only, so a server
    another test left running on a thread of its own (a sweep's read) is not counted."""
    prepare = AsyncAdapt_asyncpg_connection._prepare
    thread = threading.get_ident()

    async def prepared(self: Any, operation: str, *args: Any) -> Any:
        if (only is None or self is only) and threading.get_ident() == thread:
            sent.append(operation)
        return await prepare(self, operation, *args)

    AsyncAdapt_asyncpg_connection._prepare = prepared  # type: ignore[method-assign]
    try:
        yield
    finally:
        AsyncAdapt_asyncpg_connection._prepare = prepare  # type: ignore[method-assign]


@contextmanager
def statements_sent(connection: AsyncConnection) -> Iterator[list[str]]:
    """The statements storage/prepared_statements.py runs on the driver as well as Core's.
    On SQLite, sqlite3's own trace. On PostgreSQL, what the asyncpg adapter prepares for
    this connection. Elsewhere every statement goes through SQLAlchemy's execution, whose
    `before_cursor_execute` sees it."""
    sent: list[str] = []
    if connection.dialect.name == "sqlite":
        raw = connection.sync_connection.connection.driver_connection._connection  # type: ignore[union-attr]
        raw.set_trace_callback(_sqlite_tracer(sent))
        try:
            yield sent
        finally:
            raw.set_trace_callback(None)
        return

    if connection.dialect.driver == "asyncpg":
        adapter = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        with _asyncpg_prepares(sent, only=adapter):
            yield sent
        return

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    sync = connection.sync_connection
    assert sync is not None
    event.listen(sync, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(sync, "before_cursor_execute", seen)


@contextmanager
def statements_sent_by(db: Database) -> Iterator[list[str]]:
    """What `db` sends while the block runs, through whichever connection: on SQLite the
    write transactions' (each transaction the write engine begins in the block is traced,
    as `statements_sent` traces one connection); on PostgreSQL every statement the asyncpg adapter
    prepares on this thread (every connection's, reads too)."""
    engine = db.write_engine.sync_engine
    sent: list[str] = []
    if engine.dialect.name != "sqlite":
        assert engine.dialect.driver == "asyncpg", engine.dialect.driver
        with _asyncpg_prepares(sent):
            yield sent
        return

    traced: list[Any] = []

    def on_begin(connection: Any) -> None:
        # At each transaction's start, not at checkout: the group commit keeps its
        # connection between batches (storage/write_batches.py). First among the listeners,
        # so that BEGIN itself is seen.
        raw = connection.connection.driver_connection._connection
        raw.set_trace_callback(_sqlite_tracer(sent))
        traced.append(raw)

    event.listen(engine, "begin", on_begin, insert=True)
    try:
        yield sent
    finally:
        event.remove(engine, "begin", on_begin)
        for raw in traced:
            raw.set_trace_callback(None)
