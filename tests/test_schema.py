"""Schema migrations: `rollscribe db upgrade`, and servers and workers that refuse a schema
older or newer than their code, keeping the data that is there."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from storage.database import Database
from storage.schema import BASELINE, head_revision, status, upgrade
from tests.conftest import create_meeting
from tests.databases import database_args, database_url_for
from tests.server_process import ROOT, ServerProcess


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _db_args(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir), *database_args(data_dir)]


async def _run_sql(url: str, *statements: str) -> None:
    db = Database(url)
    try:
        async with db.write() as session:
            for statement in statements:
                await session.execute(text(statement))
    finally:
        await db.close()


def _at_revision(data_dir: Path, revision: str, drop_version: bool = False) -> str:
    """A database at `revision` holding one meeting; without its version table if asked
    (as `create_all` left databases before migrations existed)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url_for(data_dir)

    async def make() -> None:
        db = Database(url)
        try:
            await upgrade(db, revision)
        finally:
            await db.close()

    asyncio.run(make())
    asyncio.run(
        _run_sql(
            url,
            "INSERT INTO meetings (id, owner, tracks, state, gaps, created_at, last_served_at)"
            f" VALUES ('m_old', '', '[]', 'recording', '[]', {time.time()}, 0.0)",
            *(["DROP TABLE alembic_version"] if drop_version else []),
        )
    )
    return url


def _serve(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return _cli("serve", "--port", "0", "--workers", "0", *_db_args(data_dir), timeout=60)


@pytest.mark.parametrize("drop_version", [False, True], ids=["at-0001", "before-migrations"])
def test_old_schema_is_refused_until_db_upgrade(tmp_path, drop_version):
    data_dir = tmp_path / "data"
    _at_revision(data_dir, BASELINE, drop_version)
    refused = _serve(data_dir)
    assert refused.returncode != 0
    assert f"schema is at revision {BASELINE}" in refused.stderr
    assert "rollscribe db upgrade" in refused.stderr
    worker = _cli("worker", *_db_args(data_dir))
    assert worker.returncode != 0 and "rollscribe db upgrade" in worker.stderr

    before = _cli("db", "status", *_db_args(data_dir))
    assert before.returncode == 0
    assert f"schema {BASELINE}, code {head_revision()}: needs" in before.stdout
    upgraded = _cli("db", "upgrade", *_db_args(data_dir))
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema upgraded: {BASELINE} -> {head_revision()}" in upgraded.stdout
    again = _cli("db", "upgrade", *_db_args(data_dir))
    assert f"schema already at {head_revision()}" in again.stdout

    server = ServerProcess(data_dir).start()
    try:
        # The meeting written under the old schema is still there.
        view = requests.get(f"{server.url}/meetings/m_old", timeout=10)
        assert view.status_code == 200 and view.json()["state"] == "recording"
        assert create_meeting(server.url, tracks=["mic"])["id"]
    finally:
        server.stop()


def test_newer_schema_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    url = _at_revision(data_dir, "head")
    asyncio.run(_run_sql(url, "UPDATE alembic_version SET version_num = '9999'"))
    refused = _serve(data_dir)
    assert refused.returncode != 0
    assert "revision 9999, which this rollscribe" in refused.stderr
    assert "does not know" in refused.stderr


def test_empty_database_is_initialised_at_start(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = database_url_for(data_dir)
    server = ServerProcess(data_dir).start()
    server.stop()

    async def check() -> str | None:
        db = Database(url)
        try:
            return (await status(db)).current
        finally:
            await db.close()

    assert asyncio.run(check()) == head_revision()


def test_nodes_starting_together_on_an_empty_database(tmp_path):
    """Two nodes initialising one empty database at once: one creates, both run."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    nodes = [ServerProcess(data_dir) for _ in range(2)]
    started = time.monotonic()
    try:
        errors: list[BaseException] = []

        def start(node: ServerProcess) -> None:
            try:
                node.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for node in nodes:
            assert requests.get(node.url + "/readyz", timeout=10).status_code == 200
        assert time.monotonic() - started < 60
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nonsense", "Could not parse"),
        ("foo://bar", "Can't load plugin"),
        # asyncio's loop words it "Connect call failed", uvloop's (serve) "Connection refused".
        (
            "postgresql://someone:hunter2@127.0.0.1:1/rollscribe",
            "DatabaseUnreachable: cannot connect to the database: [Errno 111]",
        ),
    ],
)
def test_unusable_database_url_is_a_clear_error(tmp_path, url, expected):
    for command in (
        ["db", "status", "--database-url", url],
        [
            "serve",
            "--port",
            "0",
            "--workers",
            "0",
            "--data-dir",
            str(tmp_path),
            "--database-url",
            url,
        ],
    ):
        result = _cli(*command)
        assert result.returncode == 1, result.stderr
        assert "rollscribe: cannot use the database" in result.stderr
        assert expected in result.stderr
        assert "hunter2" not in result.stderr and "Traceback" not in result.stderr
