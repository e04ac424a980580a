"""Helpers for API key tests: the `rollscribe keys` command, and rows counted in a server's
own database (to show a refused request stored nothing)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from storage.database import Database
from tests.databases import database_url_for
from tests.server_process import ROOT


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_command(keys_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", *args, "--file", str(keys_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def add_key(keys_file: Path, *args: str) -> str:
    """A new key's token (what `keys add` printed)."""
    result = keys_command(keys_file, "add", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def rows(data_dir: Path, table: str, owner: str) -> int:
    async def count() -> int:
        db = Database(database_url_for(data_dir))
        try:
            async with db.read() as session:
                found = await session.execute(
                    text(f"SELECT count(*) FROM {table} WHERE owner = :owner"), {"owner": owner}
                )
                return int(found.scalar_one())
        finally:
            await db.close()

    return asyncio.run(count())


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> float:
    """Seconds until `check()` held; fails the test if it never does."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, "condition not met in time"
        time.sleep(0.05)
    return time.monotonic() - start
