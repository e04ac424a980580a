"""The SQLite upload locks (storage/upload_locks.FileLocks): one byte per upload of one
lock file, held by an open file description lock. Two holders exclude each other even in
one process, closing or dying releases, and no file is made per upload. (Across real
server processes: tests/test_multi_node.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from storage.database import Database
from storage.upload_locks import FileLocks, lock_offset


def _db(tmp_path: Path) -> Database:
    return Database(f"sqlite+aiosqlite:///{(tmp_path / 'locks.db').resolve()}")


def test_two_holders_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    async def main() -> list[bool]:
        db = _db(tmp_path)
        a, b = FileLocks(db, tmp_path / "locks"), FileLocks(db, tmp_path / "locks")
        seen = [
            await a.try_lock("upload-1"),
            await b.try_lock("upload-1"),  # a holds it
            await b.try_lock("upload-2"),  # another upload is free
            a.holds("upload-1") and not b.holds("upload-1") and b.holds("upload-2"),
        ]
        await a.unlock("upload-1")
        seen += [await b.try_lock("upload-1"), await a.try_lock("upload-2")]
        await b.unlock("upload-2")
        await b.unlock("upload-2")  # a second unlock is a no-op
        seen.append(await a.try_lock("upload-2"))
        for locks in (a, b):
            await locks.close()
        await db.close()
        return seen

    assert asyncio.run(main()) == [True, False, True, True, True, False, True]


def test_closing_releases_every_lock(tmp_path: Path) -> None:
    async def main() -> list[bool]:
        db = _db(tmp_path)
        a, b = FileLocks(db, tmp_path / "locks"), FileLocks(db, tmp_path / "locks")
        for n in range(3):
            assert await a.try_lock(f"u{n}")
        before = [await b.try_lock(f"u{n}") for n in range(3)]
        await a.close()
        after = [await b.try_lock(f"u{n}") for n in range(3)]
        await b.close()
        await db.close()
        return before + after

    assert asyncio.run(main()) == [False] * 3 + [True] * 3


def test_a_killed_holders_lock_is_released(tmp_path: Path) -> None:
    holder = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from pathlib import Path
        from storage.database import Database
        from storage.upload_locks import FileLocks
        locks = FileLocks(Database("sqlite+aiosqlite:///{tmp_path}/locks.db"),
                          Path({str(tmp_path / "locks")!r}))
        assert asyncio.run(locks.try_lock("upload-1"))
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", holder],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"

        async def attempt() -> bool:
            db = _db(tmp_path)
            locks = FileLocks(db, tmp_path / "locks")
            try:
                return await locks.try_lock("upload-1")
            finally:
                await locks.close()
                await db.close()

        assert asyncio.run(attempt()) is False
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert asyncio.run(attempt()) is True
    finally:
        child.kill()
        child.wait(10)


def test_locks_make_no_file_per_upload(tmp_path: Path) -> None:
    async def main() -> None:
        db = _db(tmp_path)
        locks = FileLocks(db, tmp_path / "locks")
        for n in range(100):
            assert await locks.try_lock(f"upload-{n}")
            await locks.unlock(f"upload-{n}")
        await locks.close()
        await db.close()

    asyncio.run(main())
    assert [p.name for p in (tmp_path / "locks").iterdir()] == ["uploads"]


def test_lock_offsets_are_stable_62_bit_and_spread() -> None:
    offsets = {lock_offset(f"id-{n}") for n in range(10_000)}
    assert len(offsets) == 10_000
    assert all(0 <= o < 2**62 for o in offsets)
    assert lock_offset("abc") == lock_offset("abc")
