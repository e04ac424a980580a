"""SQLite's page caches stay small however many of the read pool's connections scan a large
table (storage/database.py, SQLITE_READ_POOL_CACHE_KIB): a long-running server does not grow
by 2 MiB for every pooled connection that ran admission's backlog sum once."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.database import SQLITE_READ_POOL_CACHE_KIB, Database
from tests.databases import on_postgres

pytestmark = pytest.mark.skipif(on_postgres(), reason="SQLite's page cache")

CONNECTIONS = 15  # the read pool's 5 kept + 10 overflow, all at once
TABLE_MIB = 8  # larger than any connection's cache: each scan fills its cache


def _sqlite_heap() -> Callable[[], int]:
    """`sqlite3_memory_used()` of the SQLite library Python's sqlite3 runs on (the same
    shared library: dlopen hands back the loaded one): what every connection of this process
    holds, page caches included."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("Python's sqlite3 is not linked to a shared libsqlite3")
    used = ctypes.CDLL(name).sqlite3_memory_used
    used.restype = ctypes.c_int64
    return lambda: int(used())


def _fill(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE filler (body BLOB)")
        row = b"x" * 1000
        connection.executemany(
            "INSERT INTO filler VALUES (?)", [(row,) for _ in range(TABLE_MIB * 1024)]
        )
    connection.close()


def test_scans_on_every_pooled_connection_keep_the_caches_small(tmp_path: Path) -> None:
    used = _sqlite_heap()
    path = tmp_path / "rollscribe.db"
    _fill(path)

    async def main() -> tuple[int, int, int, set[int]]:
        db = Database(f"sqlite+aiosqlite:///{path}")
        scanned = asyncio.Barrier(CONNECTIONS + 1)
        measured = asyncio.Event()
        connections: set[int] = set()

        async def scan() -> None:
            async with db.read() as session:
                await session.execute(text("SELECT sum(length(body)) FROM filler"))
                connection = await session.connection()
                connections.add(id((await connection.get_raw_connection()).driver_connection))
                await scanned.wait()  # every scan holds its connection until measured
                await measured.wait()

        before = used()
        scans = asyncio.gather(*(scan() for _ in range(CONNECTIONS)))
        await scanned.wait()
        during = used()
        measured.set()
        await scans
        # The pool closes the overflow connections as they come back and keeps 5.
        after = used()
        await db.close()
        return before, during, after, connections

    before, during, after, connections = asyncio.run(main())
    assert len(connections) == CONNECTIONS
    held_kib, kept_kib = (during - before) / 1024, (after - before) / 1024
    # Each connection filled its cache (the table is larger than any cache): with SQLite's
    # default of 2 MiB each, about 30 MiB held and 10 MiB kept; with the read pool's cache,
    # 512 KiB each and each connection's own hundred KiB.
    assert CONNECTIONS * SQLITE_READ_POOL_CACHE_KIB * 0.9 < held_kib
    assert held_kib < CONNECTIONS * (SQLITE_READ_POOL_CACHE_KIB + 256)
    assert kept_kib < 5 * (SQLITE_READ_POOL_CACHE_KIB + 256)


def test_the_writer_keeps_sqlites_default_cache(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'rollscribe.db'}")
        async with db.read() as session:
            pooled = (await session.execute(text("PRAGMA cache_size"))).scalar_one()
        async with db.write() as session:
            writer = (await session.execute(text("PRAGMA cache_size"))).scalar_one()
        await db.close()
        return pooled, writer

    pooled, writer = asyncio.run(main())
    assert pooled == -SQLITE_READ_POOL_CACHE_KIB
    assert writer == -2000  # SQLite's default, in KiB: every upload's writes run on it
