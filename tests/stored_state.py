"""A server on SQLite whose stored state a test can read (read-only) and compare: the
fuzzer's "a refused request changes nothing" and its regression tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.blob_stores import ON_S3
from tests.server_process import ServerProcess


def sqlite_server(data_dir: Path, env: dict[str, str]) -> ServerProcess:
    # SQLite named here, on every CI run, so the test can read what is stored (read-only).
    db = data_dir / "rollscribe.db"
    return ServerProcess(
        data_dir,
        extra=[
            "--database-url",
            f"sqlite+aiosqlite:///{db.resolve()}",
            # Nothing moves by itself while a request is judged: no expiry, no sweep.
            "--sweep-interval-seconds",
            "3600",
            "--read-timeout-seconds",
            "5",
            "--max-upload-bytes",
            str(1024 * 1024),
        ],
        env=env,
    )


def stored(data_dir: Path) -> dict[str, Any]:
    """Every row of every table, and every blob file with its size: what a refused request
    must leave alone."""
    db = data_dir / "rollscribe.db"
    connection = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        state: dict[str, Any] = {
            table: sorted(map(repr, connection.execute(f'SELECT * FROM "{table}"')))
            for table in tables
        }
    finally:
        connection.close()
    if not ON_S3:  # the blobs live in the data folder
        state["files"] = sorted(
            (str(p.relative_to(data_dir)), p.stat().st_size)
            for p in data_dir.rglob("*")
            if p.is_file() and not p.name.startswith("rollscribe.db")
        )
    return state
