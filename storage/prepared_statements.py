"""The few Core statements every upload runs, run on the driver without SQLAlchemy's execution.

An upload (its POST and its PATCH) runs about ten statements: reads of its upload, meeting
and chunks by key, writes of their rows, its event and its byte count. Through
`AsyncConnection.execute` each costs SQLAlchemy's whole execution path (a greenlet switch
each way, the statement cache's lookup, parameter setup, a cursor adapter, the result's
metadata) where SQLite itself spends a few microseconds: a profile of one server under 200
uploading clients had SQLAlchemy innermost in 46 % of the samples that held the GIL, and
sqlite3 in 5 % (`bench/README.md`, "Many small uploads").

On SQLite those statements run where they can run inline anyway (`storage/sqlite_connection`:
in a write transaction, once this process holds the write lock, and on point-read
connections), so here they go straight to the `sqlite3` connection: the statement is compiled
by SQLAlchemy once per set of parameter names, its parameters and result columns are
converted by the columns' own types (JSON, states, booleans), and sqlite3 keeps it prepared
(its statement cache). Errors are SQLAlchemy's (`IntegrityError` stays `IntegrityError`).

On PostgreSQL the same statements go to asyncpg through the pieces of SQLAlchemy's own
asyncpg adapter (`sqlalchemy.dialects.postgresql.asyncpg`) that its cursor uses for every
statement: its lock on the connection, its lazily started transaction (so a statement here
runs in the transaction Core began, or begins it as Core would; on a write transaction's
connection, in autocommit, in the one `storage/postgres_transaction.py` began), its cache
of prepared statements (shared with Core's statements of the same text) and its translation
of asyncpg's errors. Those are private names of SQLAlchemy's; if a release renames them,
`_asyncpg_adapter` finds them missing and every statement runs through Core again
(`tests/test_prepared_statements.py` then fails, so the upgrade is noticed). What this skips
on PostgreSQL is the greenlet hop, the cursor adapter and the result's set-up per statement,
about the CPU it saves per statement on SQLite; the round trip to the server stays.

What is hand-written is only the call: compiling, typing and the transaction stay
SQLAlchemy's. Everything else falls back to Core, unchanged: any other connection, several
rows at once on PostgreSQL (Core batches those into one INSERT), and any statement this
does not cover (Python-side defaults, expanding `IN` parameters, `RETURNING`) -- decided
once per compiled form.

Statement-level SQLAlchemy events (`before_cursor_execute`) do not see these statements;
sqlite3's trace callback and PostgreSQL's statement log do.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import Select, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

from storage.kept_connections import driver_of
from storage.sqlite_connection import SqliteConnection

if TYPE_CHECKING:  # write_transaction's commit-time writes use this module
    from storage.write_transaction import WriteTransaction

Processor = Callable[[Any], Any] | None
Params = Mapping[str, Any]
# What the statements of this module are handed: a write transaction, a read session, or a
# connection (a point read's, or the one `write_pending` writes on).
Runner: TypeAlias = "WriteTransaction | AsyncSession | AsyncConnection"

_NO_VALUE = object()


@dataclass(slots=True)
class _Plan:
    sql: str
    # Positional parameters: each one's name, its value when the caller names none, its
    # type's conversion to what sqlite3 takes.
    binds: tuple[tuple[str, Any, Processor], ...]
    # A select's columns: each one's key and its type's conversion from what sqlite3 gives
    # (None for a statement whose columns have no types: plain SQL, whose rows are as
    # sqlite3 gives them, by the names SQLite gives).
    columns: tuple[tuple[str, Processor], ...] | None
    # The same on PostgreSQL, where a type's conversion depends on the type the server
    # says the column has (asyncpg's attributes): filled in on the statement's first run.
    driver_columns: tuple[tuple[str, Processor], ...] | None = None


def _plan(statement: Executable, dialect: Dialect, keys: list[str], many: bool) -> _Plan | None:
    # Compiled as Connection.execute compiles it: for the parameter names given (an INSERT's
    # or UPDATE's columns are the ones named), and for executemany when there are several.
    compiled = statement.compile(dialect=dialect, column_keys=keys, for_executemany=many)
    assert isinstance(compiled, SQLCompiler)
    # PostgreSQL's INSERT returns the new row's generated id (Core's implicit RETURNING, for
    # `inserted_primary_key`); nobody here asks for it, and the driver path drops the row.
    returns_only_new_id = compiled.implicit_returning and dialect.name == "postgresql"
    if (
        compiled.insert_prefetch
        or compiled.update_prefetch
        or (compiled.effective_returning and not returns_only_new_id)
        or compiled.post_compile_params
        or compiled.positiontup is None
    ):
        return None  # defaults computed in Python, IN lists, RETURNING: Core's to run
    binds = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        if bind.expanding or bind.callable is not None:
            return None
        default = _NO_VALUE if bind.required else bind.value
        binds.append((name, default, bind.type.dialect_impl(dialect).bind_processor(dialect)))
    columns: list[tuple[str, Processor]] | None = None
    if isinstance(statement, Select) and dialect.name == "sqlite":  # PostgreSQL: _driver_columns
        columns = []
        for column in statement.selected_columns:
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            columns.append((column.key, process))
    return _Plan(compiled.string, tuple(binds), None if columns is None else tuple(columns))


class PreparedStatement:
    """A Core statement of the upload path. Build it once, at import, as a module constant:
    its compiled forms are kept with it."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plans: dict[tuple[tuple[str, ...], bool], _Plan | None] = {}

    def _plan_for(self, dialect: Dialect, params: Params, many: bool) -> _Plan | None:
        key = (tuple(sorted(params)), many)
        try:
            return self._plans[key]
        except KeyError:
            plan = self._plans[key] = _plan(self.statement, dialect, list(key[0]), many)
            return plan


def _arguments(plan: _Plan, params: Params) -> list[Any]:
    values = []
    for name, default, process in plan.binds:
        value = params.get(name, default)
        if value is _NO_VALUE:
            raise exc.ArgumentError(f"A value is required for bind parameter {name!r}")
        values.append(value if process is None else process(value))
    return values


def inline_sqlite(connection: AsyncConnection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `connection` when a statement may run on it now, on the
    event loop's thread (storage/sqlite_connection: its own rules for running inline)."""
    if connection.dialect.name != "sqlite":
        return None
    driver = connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]
    if not isinstance(driver, SqliteConnection) or not (driver.holds_write_lock or driver.inline):
        return None
    return driver._connection


# What SQLAlchemy's asyncpg adapter's cursor uses to run a statement (see the module's
# docstring): found by name once per adapter class.
_ADAPTER_PARTS = ("_execute_mutex", "_transaction", "_start_transaction", "_prepare")
_ADAPTERS_KNOWN: dict[type, bool] = {}
# How asyncpg reports the rows a statement touched (as the adapter's cursor reads it).
_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")


def _asyncpg_adapter(connection: AsyncConnection) -> Any | None:
    """SQLAlchemy's adapter of the asyncpg connection under `connection`, if it is one and
    has the parts this module uses."""
    if connection.dialect.driver != "asyncpg":
        return None
    adapter = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    known = _ADAPTERS_KNOWN.get(type(adapter))
    if known is None:
        known = _ADAPTERS_KNOWN[type(adapter)] = all(hasattr(adapter, p) for p in _ADAPTER_PARTS)
    return adapter if known else None


async def _run_asyncpg(
    connection: AsyncConnection, adapter: Any, plan: _Plan, params: Params, one: bool
) -> tuple[Any, Sequence[Any]]:
    """A statement through the adapter's own steps: its connection lock, its transaction
    (begun here if no statement has begun it yet, as its cursor does; none on an autocommit
    connection), its prepared statement. A read's first row, or a write's status message;
    with asyncpg's description of the columns."""
    dialect = connection.dialect
    arguments = _arguments(plan, params)
    try:
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await adapter._start_transaction()
            prepared, attributes = await adapter._prepare(
                plan.sql,
                dialect._invalidate_schema_cache_asof,  # type: ignore[attr-defined]
            )
            if one:
                return await prepared.fetchrow(*arguments), attributes
            await prepared.fetch(*arguments)
            return prepared.get_statusmsg(), attributes
    except Exception as error:
        # Outside the connection's lock: invalidating a lost connection closes it.
        raise await _as_core_raises_it(connection, adapter, plan.sql, params, error) from error


async def _as_core_raises_it(
    connection: AsyncConnection, adapter: Any, sql: str, params: Params, error: Exception
) -> exc.DBAPIError:
    """asyncpg's error as Core's execution would raise it: translated to the adapter's DB-API
    error, wrapped in SQLAlchemy's (a duplicate key an `IntegrityError`); a lost connection
    invalidated, so that the pool does not hand it out again."""
    dialect = connection.dialect
    dbapi: Any = dialect.loaded_dbapi
    if not isinstance(error, dbapi.Error):
        try:
            adapter._handle_exception(error)  # raises the translated error, or `error` itself
        except dbapi.Error as translated:
            error = translated
    if isinstance(error, dbapi.InvalidCachedStatementError | dbapi.InternalServerError):
        dialect._invalidate_schema_cache()  # type: ignore[attr-defined] # as Core's context does
    invalidated = dialect.is_disconnect(error, adapter, None)
    if invalidated:
        await connection.invalidate(error)
    return exc.DBAPIError.instance(  # type: ignore[return-value]
        sql, params, error, dbapi.Error, dialect=dialect, connection_invalidated=invalidated
    )


async def run_simple_asyncpg(connection: AsyncConnection, sql: str) -> None:
    """A query without parameters or rows (one statement or several) in PostgreSQL's simple
    protocol, on asyncpg under SQLAlchemy's adapter (its connection lock; errors as Core
    raises them). Never begins a transaction of the adapter's: for connections in
    autocommit, whose transactions their owner begins and ends itself
    (`storage/postgres_transaction.py`)."""
    adapter = _asyncpg_adapter(connection)
    if adapter is None:
        raise TypeError("not a connection of SQLAlchemy's asyncpg adapter")
    try:
        async with adapter._execute_mutex:
            await driver_of(connection).execute(sql)
    except Exception as error:
        raise await _as_core_raises_it(connection, adapter, sql, {}, error) from error


def _driver_columns(
    statement: Executable, dialect: Dialect, attributes: Sequence[Any]
) -> tuple[tuple[str, Processor], ...]:
    """A PostgreSQL row's columns: each one's key and its type's conversion for the type the
    server gives it (plain SQL: asyncpg's names and values as they are)."""
    if not isinstance(statement, Select):
        return tuple((attribute.name, None) for attribute in attributes)
    return tuple(
        (column.key, column.type.dialect_impl(dialect).result_processor(dialect, attr.type.oid))
        for column, attr in zip(statement.selected_columns, attributes, strict=True)
    )


def _typed_row(columns: tuple[tuple[str, Processor], ...], found: Sequence[Any]) -> dict[str, Any]:
    return {
        key: value if process is None else process(value)
        for (key, process), value in zip(columns, found, strict=True)
    }


async def _connection_of(runner: Runner) -> AsyncConnection:
    if isinstance(runner, AsyncConnection):
        return runner
    # A write transaction's connection: what its ORM session added is flushed first.
    return await runner.connection()


def run_plain(raw: sqlite3.Connection, sql: str) -> None:
    """A statement without parameters or rows (a savepoint's), on an `inline_sqlite`."""
    try:
        raw.execute(sql)
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(sql, None, error, sqlite3.Error) from error


def _run(raw: sqlite3.Connection, plan: _Plan, params: Params | Sequence[Params]) -> sqlite3.Cursor:
    try:
        if isinstance(params, Mapping):
            return raw.execute(plan.sql, _arguments(plan, params))
        return raw.executemany(plan.sql, [_arguments(plan, p) for p in params])
    except sqlite3.Error as error:
        # As Core raises it: IntegrityError for a duplicate key, and so on.
        raise exc.DBAPIError.instance(plan.sql, params, error, sqlite3.Error) from error


async def fetch_first(
    runner: Runner, prepared: PreparedStatement, params: Params
) -> dict[str, Any] | None:
    """The first row of a SELECT, by column key (for `storage/models.detached`), or None."""
    connection = await _connection_of(runner)
    raw = inline_sqlite(connection)
    adapter = None if raw is not None else _asyncpg_adapter(connection)
    plan = None
    if raw is not None or adapter is not None:
        plan = prepared._plan_for(connection.dialect, params, False)
    if plan is None:
        row = (await connection.execute(prepared.statement, params)).first()
        return None if row is None else dict(row._mapping)
    if adapter is not None:
        found, attributes = await _run_asyncpg(connection, adapter, plan, params, one=True)
        if found is None:
            return None
        if plan.driver_columns is None:
            plan.driver_columns = _driver_columns(
                prepared.statement, connection.dialect, attributes
            )
        return _typed_row(plan.driver_columns, found)
    assert raw is not None
    cursor = _run(raw, plan, params)
    found, description = cursor.fetchone(), cursor.description
    # Done with the statement now, as Core's `first()` is: a read left open would hold its
    # snapshot of the WAL (and keep checkpoints from finishing) until the cursor is freed.
    cursor.close()
    if found is None:
        return None
    if plan.columns is None:
        return {column[0]: value for column, value in zip(description, found, strict=True)}
    return _typed_row(plan.columns, found)


async def write(
    runner: Runner, prepared: PreparedStatement, params: Params | Sequence[Params]
) -> int:
    """An INSERT, UPDATE or DELETE (several rows' parameters: executemany); the rows it
    matched."""
    if not params and not isinstance(params, Mapping):
        return 0  # no rows to write (Core would refuse an empty executemany)
    connection = await _connection_of(runner)
    many = not isinstance(params, Mapping)
    raw = inline_sqlite(connection)
    # Several rows on PostgreSQL stay Core's: it batches them into one INSERT.
    adapter = None if raw is not None or many else _asyncpg_adapter(connection)
    first = params if isinstance(params, Mapping) else params[0]
    plan = None
    if raw is not None or adapter is not None:
        plan = prepared._plan_for(connection.dialect, first, many)
    if plan is None:
        result = await connection.execute(prepared.statement, params)  # type: ignore[arg-type]
        return result.rowcount  # type: ignore[attr-defined, no-any-return]
    if adapter is not None:
        assert isinstance(params, Mapping)
        status, _ = await _run_asyncpg(connection, adapter, plan, params, one=False)
        counted = _ROWCOUNT.match(status or "")
        return int(counted.group(1)) if counted else -1
    assert raw is not None
    return _run(raw, plan, params).rowcount
