"""What statements a connection sends to its database, for tests that count them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection


@contextmanager
def statements_sent(connection: AsyncConnection) -> Iterator[list[str]]:
    """The statements storage/prepared_statements.py runs on the driver as well as Core's.
    On SQLite, sqlite3's own trace. On PostgreSQL, each statement that SQLAlchemy's asyncpg
    adapter prepares for this connection (its cache hands both paths their prepared
    statement; BEGIN and COMMIT are not prepared, so not seen). Elsewhere every statement
    goes through SQLAlchemy's execution, whose `before_cursor_execute` sees it."""
    sent: list[str] = []
    if connection.dialect.name == "sqlite":

        def traced(statement: str) -> None:
            # SQLite calls the trace again at the start of each trigger subprogram of the
            # statement (foreign keys' among them), and Python hands over the statement's
            # text each time: one execution, one entry. (Two identical statements one after
            # the other count as one too: the tests compare statements that differ.)
            if not sent or sent[-1] != statement:
                sent.append(statement)

        raw = connection.sync_connection.connection.driver_connection._connection  # type: ignore[union-attr]
        raw.set_trace_callback(traced)
        try:
            yield sent
        finally:
            raw.set_trace_callback(None)
        return

    if connection.dialect.driver == "asyncpg":
        adapter = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
        adapter_class = type(adapter)
        prepare = adapter_class._prepare

        async def prepared(self: Any, operation: str, *args: Any) -> Any:
            if self is adapter:
                sent.append(operation)
            return await prepare(self, operation, *args)

        adapter_class._prepare = prepared
        try:
            yield sent
        finally:
            adapter_class._prepare = prepare
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
