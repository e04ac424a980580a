"""Which database a test runs on: SQLite in the data folder by default; PostgreSQL when
ROLLSCRIBE_TEST_POSTGRES names a server (`.ci/run` starts one and runs the suite on both).
Each data folder gets its own fresh PostgreSQL database, as it gets its own SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg

# e.g. postgresql+asyncpg://rollscribe:rollscribe@127.0.0.1:5432
POSTGRES = os.environ.get("ROLLSCRIBE_TEST_POSTGRES", "").rstrip("/")


def on_postgres() -> bool:
    return bool(POSTGRES)


# The databases this test session made: dropped when it ends (`drop_made_databases`). Left
# behind, a developer's PostgreSQL gathered a hundred after a few local runs, and its
# autovacuum went through every one of them, under the benchmarks too.
_MADE: set[str] = set()


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(POSTGRES.replace("+asyncpg", "") + "/postgres")


async def _create_database(name: str) -> None:
    connection = await _admin()
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another node of the same test made it first
        _MADE.add(name)
    finally:
        await connection.close()


async def _drop_databases(names: list[str]) -> None:
    connection = await _admin()
    try:
        for name in names:
            # FORCE: a server a failed test left running loses its sessions, not the drop.
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def drop_made_databases() -> int:
    """Drop every database this session made (the end of a test session); how many."""
    names = sorted(_MADE)
    _MADE.clear()
    if names:
        asyncio.run(_drop_databases(names))
    return len(names)


def database_url_for(data_dir: Path) -> str:
    """The database of the server whose data folder is `data_dir` (made on first use)."""
    if not POSTGRES:
        return f"sqlite+aiosqlite:///{(data_dir / 'rollscribe.db').resolve()}"
    name = "t_" + hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:24]
    # Its own thread and loop: callers may be inside a running event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _create_database(name)).result()
    return f"{POSTGRES}/{name}"


def database_args(data_dir: Path) -> list[str]:
    """`--database-url ...` for a server or worker process; none on SQLite (its default)."""
    return ["--database-url", database_url_for(data_dir)] if POSTGRES else []


def storage_args(data_dir: Path) -> list[str]:
    """The database and the blob store of the process whose data folder is `data_dir`."""
    from tests.blob_stores import blob_args

    return database_args(data_dir) + blob_args(data_dir)
