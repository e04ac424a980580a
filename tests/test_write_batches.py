"""SQLite group commit (storage/write_batches.py) and the connections under it
(storage/sqlite_connection.py): shared commits, a failing member alone rolled back, a
failed COMMIT failing every member, a failing member's error raised once what it may have
read is committed, durability before return, cancellation, and where statements run."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

from sqlalchemy import event, text

from storage.database import Database
from storage.prepared_statements import PreparedStatement

_ROW = PreparedStatement(text("SELECT id FROM row WHERE id = :id"))


def _point_reader(db: Database) -> sqlite3.Connection:
    """The sqlite3 connection under the database's point reads (opened by the first)."""
    reader = db._point_reader
    assert reader is not None
    return reader.sync_connection.connection.driver_connection._connection  # type: ignore[union-attr]


async def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{(tmp_path / 'batches.db').resolve()}")
    async with db.write_engine.begin() as connection:
        await connection.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await connection.execute(
            text(
                "CREATE TABLE row (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
        )
        await connection.execute(text("INSERT INTO parent (id) VALUES (1)"))
    return db


def _count_commits(db: Database) -> list[int]:
    commits: list[int] = []

    @event.listens_for(db.write_engine.sync_engine, "commit")
    def _on_commit(_conn: object) -> None:
        commits.append(1)

    return commits


async def _rows(db: Database) -> list[int]:
    async with db.read() as session:
        return [r[0] for r in (await session.execute(text("SELECT id FROM row ORDER BY id")))]


async def _insert(db: Database, row_id: int, parent: int = 1) -> None:
    async with db.write() as session:
        await session.execute(
            text("INSERT INTO row (id, parent) VALUES (:id, :parent)"),
            {"id": row_id, "parent": parent},
        )


def test_writers_that_queue_up_share_one_commit(tmp_path: Path) -> None:
    async def main() -> tuple[list[int], int]:
        db = await _db(tmp_path)
        commits = _count_commits(db)
        await asyncio.gather(*(_insert(db, i) for i in range(40)))
        rows = await _rows(db)
        await db.close()
        return rows, len(commits)

    rows, commits = asyncio.run(main())
    assert rows == list(range(40))
    # 40 writers queued at once: at most 32 share a commit, so two or three commits.
    assert 2 <= commits <= 3, commits


def test_a_lone_writer_commits_before_it_returns(tmp_path: Path) -> None:
    async def main() -> None:
        db = await _db(tmp_path)
        await _insert(db, 7)
        # Another connection (another process would see the same) finds the row at once.
        with sqlite3.connect(tmp_path / "batches.db") as other:
            assert other.execute("SELECT id FROM row").fetchall() == [(7,)]
        await db.close()

    asyncio.run(main())


def test_a_failing_member_alone_is_rolled_back(tmp_path: Path) -> None:
    async def failing() -> None:
        async with db.write() as session:
            await session.execute(text("INSERT INTO row (id, parent) VALUES (100, 1)"))
            raise RuntimeError("refused by a rule")

    async def main() -> list[BaseException | None]:
        nonlocal db
        db = await _db(tmp_path)
        results = await asyncio.gather(
            _insert(db, 1), failing(), _insert(db, 2), return_exceptions=True
        )
        assert await _rows(db) == [1, 2]
        await db.close()
        return results

    db: Database
    results = asyncio.run(main())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], RuntimeError)


def test_a_member_that_refuses_on_what_another_wrote_raises_once_that_is_committed(
    tmp_path: Path,
) -> None:
    """A member may refuse because of a row an earlier member of its batch wrote (a chunk's
    key found taken: "answer with the upload that has it"); its caller then reads that row
    elsewhere, which it can only do once the batch is committed."""

    class Taken(Exception):
        pass

    async def refusing(seen_by_caller: list[list[tuple[int]]]) -> None:
        try:
            async with db.write() as session:
                found = await session.execute(text("SELECT id FROM row WHERE id = 5"))
                if found.first() is not None:
                    raise Taken
                await session.execute(text("INSERT INTO row (id, parent) VALUES (5, 1)"))
        except Taken:
            with sqlite3.connect(tmp_path / "batches.db") as other:
                seen_by_caller.append(other.execute("SELECT id FROM row").fetchall())
            raise

    async def main() -> tuple[list[BaseException | None], list[list[tuple[int]]]]:
        nonlocal db
        db = await _db(tmp_path)
        seen: list[list[tuple[int]]] = []
        results = await asyncio.gather(
            refusing(seen), refusing(seen), refusing(seen), return_exceptions=True
        )
        await db.close()
        return results, seen

    db: Database
    results, seen = asyncio.run(main())
    assert results[0] is None
    assert all(isinstance(r, Taken) for r in results[1:])
    assert seen == [[(5,)], [(5,)]]


def test_a_failed_commit_fails_every_member_and_keeps_nothing(tmp_path: Path) -> None:
    async def main() -> list[BaseException | None]:
        db = await _db(tmp_path)
        # Row 2 names a parent that does not exist; the deferred foreign key is checked at
        # COMMIT, after every member's savepoint was released.
        results = await asyncio.gather(
            _insert(db, 1), _insert(db, 2, parent=99), _insert(db, 3), return_exceptions=True
        )
        assert await _rows(db) == []
        # The next transaction starts afresh.
        await _insert(db, 4)
        assert await _rows(db) == [4]
        await db.close()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, Exception) and "FOREIGN KEY" in str(r) for r in results), results


def test_a_cancelled_member_does_not_stop_the_commit(tmp_path: Path) -> None:
    async def main() -> None:
        db = await _db(tmp_path)
        block_done = asyncio.Event()

        async def member() -> None:
            async with db.write() as session:
                await session.execute(text("INSERT INTO row (id, parent) VALUES (1, 1)"))
                block_done.set()

        task = asyncio.create_task(member())
        await block_done.wait()
        # The member has left its block and waits for the shared COMMIT: cancel it there.
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        assert await _rows(db) == [1]
        await _insert(db, 2)
        assert await _rows(db) == [1, 2]
        await db.close()

    asyncio.run(main())


def test_members_have_their_own_sessions(tmp_path: Path) -> None:
    async def member(name: str, seen: list[object]) -> None:
        async with db.write() as session:
            seen.append(session)
            session.info["mine"] = name
            await session.execute(text("INSERT INTO row (parent) VALUES (1)"))
        # After the shared commit, what this member put in its session is still its own.
        assert session.info["mine"] == name

    async def main() -> list[object]:
        nonlocal db
        db = await _db(tmp_path)
        seen: list[object] = []
        await asyncio.gather(member("a", seen), member("b", seen))
        await db.close()
        return seen

    db: Database
    seen = asyncio.run(main())
    assert len(seen) == 2 and seen[0] is not seen[1]


def test_statements_run_inline_only_while_the_write_lock_is_held(tmp_path: Path) -> None:
    """Between BEGIN IMMEDIATE and COMMIT statements run on the loop's thread, and BEGIN
    IMMEDIATE does too when nobody else holds the lock (tried without waiting); COMMIT, and
    an ordinary reader's statements, on the connection's."""

    async def main() -> list[tuple[bool, str]]:
        db = await _db(tmp_path)
        loop_thread = threading.get_ident()
        trace: list[tuple[bool, str]] = []

        def trace_raw(raw: sqlite3.Connection) -> None:
            raw.set_trace_callback(
                lambda sql: trace.append((threading.get_ident() == loop_thread, sql.strip()))
            )

        def traced(conn: object) -> None:
            trace_raw(conn.driver_connection._connection)  # type: ignore[attr-defined]

        async with db.write_engine.connect() as c:
            await c.run_sync(lambda sync: traced(sync.connection))
        async with db.write() as session:
            await session.execute(text("INSERT INTO row (id, parent) VALUES (1, 1)"))
        async with db.read() as session:
            connection = await session.connection()
            await connection.run_sync(lambda sync: traced(sync.connection))
            await session.execute(text("SELECT count(*) FROM row"))
        assert await db.read_first(_ROW, {"id": 1}) == {"id": 1}  # opens the point reader
        trace_raw(_point_reader(db))
        assert await db.read_first(_ROW, {"id": 1}) == {"id": 1}
        await db.close()
        return trace

    trace = asyncio.run(main())
    on_loop = {sql: inline for inline, sql in trace}
    assert on_loop["BEGIN IMMEDIATE"] is True
    assert on_loop["COMMIT"] is False
    assert on_loop["INSERT INTO row (id, parent) VALUES (1, 1)"] is True
    assert on_loop["SELECT count(*) FROM row"] is False
    assert on_loop["SELECT id FROM row WHERE id = 1"] is True


def test_point_reads_are_one_statement_each_on_one_connection(tmp_path: Path) -> None:
    """Many point reads at once (every tus request makes one) share one connection, held
    for the database's life: none of them yields to the loop, so none waits for another,
    and no connection is checked out or opened per read. Each is its SELECT alone, without
    BEGIN and ROLLBACK around it."""

    async def main() -> tuple[list[int], list[str], list[dict[str, object] | None]]:
        db = await _db(tmp_path)
        await _insert(db, 7)
        opened: list[int] = []
        event.listen(db._point_read_engine.sync_engine, "connect", lambda *_: opened.append(1))
        trace: list[str] = []
        await db.read_first(_ROW, {"id": 7})  # the first opens the connection, on its thread
        _point_reader(db).set_trace_callback(lambda sql: trace.append(sql.strip()))
        found = await asyncio.gather(*(db.read_first(_ROW, {"id": 7}) for _ in range(200)))
        missing = await db.read_first(_ROW, {"id": 8})
        await db.close()
        return opened, trace, [*found, missing]

    opened, trace, found = asyncio.run(main())
    assert found == [{"id": 7}] * 200 + [None]
    assert opened == [1]
    assert trace == ["SELECT id FROM row WHERE id = 7"] * 200 + ["SELECT id FROM row WHERE id = 8"]


def test_member_savepoints_go_to_sqlite_without_sqlalchemys_execution(tmp_path: Path) -> None:
    """Each member's SAVEPOINT and RELEASE (ROLLBACK TO and RELEASE, for a failing one) are
    plain SQL run on sqlite3 itself: SQLite sees them, SQLAlchemy's execution does not, and
    the failing member's row is gone while the others' stay."""

    async def failing() -> None:
        async with db.write() as session:
            await session.execute(text("INSERT INTO row (id, parent) VALUES (100, 1)"))
            raise RuntimeError("refused")

    async def main() -> tuple[list[str], list[str]]:
        nonlocal db
        db = await _db(tmp_path)
        in_sqlite: list[str] = []
        through_sqlalchemy: list[str] = []
        engine = db.write_engine.sync_engine

        @event.listens_for(engine, "checkout")
        def traced(dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.driver_connection._connection.set_trace_callback(in_sqlite.append)

        @event.listens_for(engine, "before_cursor_execute")
        def executed(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
            through_sqlalchemy.append(statement)

        await asyncio.gather(_insert(db, 1), failing(), _insert(db, 2), return_exceptions=True)
        assert await _rows(db) == [1, 2]
        await db.close()
        return in_sqlite, through_sqlalchemy

    db: Database
    in_sqlite, through_sqlalchemy = asyncio.run(main())
    savepoints = [s for s in in_sqlite if "SAVEPOINT" in s]
    assert savepoints == [
        "SAVEPOINT member_1",
        "RELEASE SAVEPOINT member_1",
        "SAVEPOINT member_2",
        "ROLLBACK TO SAVEPOINT member_2",
        "RELEASE SAVEPOINT member_2",
        "SAVEPOINT member_3",
        "RELEASE SAVEPOINT member_3",
    ], in_sqlite
    assert not [s for s in through_sqlalchemy if "SAVEPOINT" in s], through_sqlalchemy


def test_begin_waits_on_the_connections_thread_while_another_connection_writes(
    tmp_path: Path,
) -> None:
    """The first BEGIN IMMEDIATE, on the loop's thread without waiting, finds the lock taken
    (a connection outside this server's writer queue holds it): the loop is never held up,
    the BEGIN is made again on the connection's thread with the busy timeout, and it goes
    through once the other commits; the busy timeout is as it was."""

    async def main() -> tuple[list[tuple[bool, str]], int]:
        db = await _db(tmp_path)
        loop_thread = threading.get_ident()
        trace: list[tuple[bool, str]] = []
        async with db.write_engine.connect() as c:
            raw_of = await c.run_sync(
                lambda sync: sync.connection.driver_connection._connection  # type: ignore[union-attr]
            )
        raw_of.set_trace_callback(
            lambda sql: trace.append((threading.get_ident() == loop_thread, sql.strip()))
        )
        other = sqlite3.connect(tmp_path / "batches.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO parent (id) VALUES (7)")

        async def write() -> None:
            async with db.write() as session:
                await session.execute(text("INSERT INTO row (id, parent) VALUES (1, 7)"))

        writing = asyncio.ensure_future(write())
        ticks = 0
        for _ in range(20):  # the loop goes on while the BEGIN waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not writing.done()
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(writing, 10)
        async with db.write_engine.connect() as c:
            timeout = (await c.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
        await db.close()
        assert ticks == 20
        return trace, timeout

    trace, busy_timeout = asyncio.run(main())
    begins = [inline for inline, sql in trace if sql == "BEGIN IMMEDIATE"]
    assert begins[:2] == [True, False]  # tried on the loop, then waited for on the thread
    assert ("INSERT INTO row (id, parent) VALUES (1, 7)") in [sql for _, sql in trace]
    assert busy_timeout == 30_000


def test_batches_keep_their_connection_and_drop_it_after_a_failed_commit(tmp_path: Path) -> None:
    """One connection serves batch after batch (no checkout from the pool per batch); a
    batch whose COMMIT fails gives its connection up, and the next batch takes a new one;
    closing the database gives the kept one back."""

    async def main() -> tuple[list[int], int, int]:
        db = await _db(tmp_path)
        pool = db.write_engine.sync_engine.pool
        checkouts: list[int] = []
        event.listen(pool, "checkout", lambda raw, _record, _proxy: checkouts.append(id(raw)))
        for row in (11, 12, 13):  # _db made parent 1
            async with db.write() as session:
                await session.execute(text(f"INSERT INTO parent (id) VALUES ({row})"))
        kept_for_three = len(checkouts)
        # A row whose parent does not exist: the deferred foreign key fails the COMMIT.
        with contextlib.suppress(Exception):
            async with db.write() as session:
                await session.execute(text("INSERT INTO row (id, parent) VALUES (9, 99)"))
        async with db.write() as session:
            await session.execute(text("INSERT INTO row (id, parent) VALUES (1, 1)"))
        await db.close()
        return checkouts, kept_for_three, pool.checkedout()

    checkouts, kept_for_three, still_out = asyncio.run(main())
    assert kept_for_three == 1
    assert len(checkouts) == 2  # a new one after the failed COMMIT
    assert still_out == 0
