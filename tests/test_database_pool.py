"""PostgreSQL connections are kept across bursts of transactions, not opened and closed per
request (storage/database.py, POSTGRES_POOL_SIZE), and one the server closed is replaced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from storage.database import POSTGRES_POOL_OVERFLOW, POSTGRES_POOL_SIZE, Database
from storage.kept_connections import KeptConnections
from storage.prepared_statements import PreparedStatement
from tests.databases import database_url_for, on_postgres

pytestmark = pytest.mark.skipif(
    not on_postgres(), reason="SQLite's writes share one connection (storage/write_batches.py)"
)


def test_a_second_burst_of_transactions_opens_no_connection(tmp_path: Path) -> None:
    async def transaction(db: Database) -> None:
        async with db.write() as session:
            await session.execute(text("SELECT 1"))
            await asyncio.sleep(0.05)  # all of the burst hold a connection at once

    async def main() -> tuple[int, int]:
        db = Database(database_url_for(tmp_path))
        opened: list[object] = []
        event.listen(db.write_engine.sync_engine, "connect", lambda *_: opened.append(1))
        burst = 20  # requests at once in a database call, as under 200 uploading clients
        await asyncio.gather(*(transaction(db) for _ in range(burst)))
        first = len(opened)
        await asyncio.gather(*(transaction(db) for _ in range(burst)))
        second = len(opened) - first
        await db.close()
        return first, second

    first, second = asyncio.run(main())
    assert first == 20 <= POSTGRES_POOL_SIZE
    assert second == 0


def test_past_the_pool_a_burst_waits_for_connections_instead_of_failing(tmp_path: Path) -> None:
    async def main() -> int:
        db = Database(database_url_for(tmp_path))
        results = await asyncio.gather(
            *(_held_select(db) for _ in range(POSTGRES_POOL_SIZE + POSTGRES_POOL_OVERFLOW + 10))
        )
        await db.close()
        return sum(results)

    assert asyncio.run(main()) == POSTGRES_POOL_SIZE + POSTGRES_POOL_OVERFLOW + 10


async def _held_select(db: Database) -> int:
    async with db.write() as session:
        value = (await session.execute(text("SELECT 1"))).scalar_one()
        await asyncio.sleep(0.05)
        return int(value)


def test_connections_the_server_closed_are_replaced_without_an_error(tmp_path: Path) -> None:
    """The server ends every idle connection of the pool (as a restart does): the next
    transactions and point reads get new connections and never see the closed ones. The
    pool asks asyncpg whether the socket is closed, not the server (no round trip)."""
    own_pid = PreparedStatement(text("SELECT pg_backend_pid() AS pid"))

    async def main() -> tuple[set[int], set[int], int]:
        db = Database(database_url_for(tmp_path))
        before = set(await asyncio.gather(*(_held_pid(db) for _ in range(5))))
        async with db.write() as session:
            ended = (
                await session.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            ).scalar_one()
        await asyncio.sleep(0.2)  # asyncpg reads the closed sockets on the event loop
        after = set(await asyncio.gather(*(_held_pid(db) for _ in range(5))))
        read = await db.read_first(own_pid)
        assert read is not None
        after.add(read["pid"])
        await db.close()
        return before, after, ended

    before, after, ended = asyncio.run(main())
    assert ended >= len(before) - 1  # all but the connection that ended them
    assert len(before & after) <= 1  # at most the one that ended the others is reused


async def _held_pid(db: Database) -> int:
    async with db.write() as session:
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await asyncio.sleep(0.05)  # so that the five hold five connections
        return int(pid)


def test_the_hot_path_keeps_its_connections_out_of_the_pool_between_uses(
    tmp_path: Path,
) -> None:
    """Transactions and point reads one after another take no connection from the pool
    after the first of each (storage/kept_connections.py); a transaction that raised gives
    its connection back (its state is unknown), and closing the database ends them all."""
    own_pid = PreparedStatement(text("SELECT pg_backend_pid() AS pid"))

    async def main() -> tuple[int, set[int], set[int], int, int]:
        db = Database(database_url_for(tmp_path))
        checkouts: list[object] = []
        event.listen(db.write_engine.sync_engine.pool, "checkout", lambda *_: checkouts.append(1))
        writers: set[int] = set()
        readers: set[int] = set()
        for _ in range(10):
            async with db.write() as session:
                writers.add((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            row = await db.read_first(own_pid)
            assert row is not None
            readers.add(row["pid"])
        quiet = len(checkouts)
        with pytest.raises(ZeroDivisionError):
            async with db.write() as session:
                await session.execute(text("SELECT 1"))
                raise ZeroDivisionError
        async with db.write() as session:
            await session.execute(text("SELECT 1"))
        after_failure = len(checkouts) - quiet
        name = await db.read_first(PreparedStatement(text("SELECT current_database() AS n")))
        assert name is not None
        await db.close()
        watcher = Database(database_url_for(tmp_path))
        async with watcher.write() as session:
            left = (
                await session.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name["n"]},
                )
            ).scalar_one()
        await watcher.close()
        return quiet, writers, readers, after_failure, int(left)

    quiet, writers, readers, after_failure, left = asyncio.run(main())
    assert quiet == 2  # one writer, one point reader, each kept after its first use
    assert len(writers) == 1 and len(readers) == 1
    assert after_failure == 1  # the failed transaction's connection went back to the pool
    assert left == 0


def test_past_the_pool_size_connections_go_back_to_the_pool_not_to_the_kept(
    tmp_path: Path,
) -> None:
    """A burst past the pool's size: what ends then goes back to the pool (its first waiter
    gets it), and only as many as the pool's size stay kept afterwards."""

    async def main() -> tuple[int, int]:
        engine = create_async_engine(database_url_for(tmp_path), pool_size=2, max_overflow=3)
        kept = KeptConnections(engine, keep=8)
        releases = [asyncio.Event() for _ in range(5)]
        holding = asyncio.Semaphore(0)

        async def use(release: asyncio.Event) -> None:
            async with kept.connection() as connection:
                await connection.execute(text("SELECT 1"))
                await connection.commit()
                holding.release()
                await release.wait()

        users = [asyncio.create_task(use(release)) for release in releases]
        for _ in users:
            await holding.acquire()  # all five hold one: two of the pool, three overflow
        for release, user in zip(releases, users, strict=True):
            release.set()  # one after the other
            await user
        after_burst = engine.pool.checkedout()  # type: ignore[attr-defined]
        await kept.close()
        after_close = engine.pool.checkedout()  # type: ignore[attr-defined]
        await engine.dispose()
        return after_burst, after_close

    after_burst, after_close = asyncio.run(main())
    assert after_burst == 2  # the pool's size: three went back to it
    assert after_close == 0
