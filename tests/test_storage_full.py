"""A full disk is not a fault of the request that meets it: a PATCH whose bytes find no room
is answered 507 ERR_STORAGE_FULL with Retry-After (it was 500 with a traceback), what it
wrote past its last commit is cut so that the space is free again (it stayed taken by bytes
nobody acknowledged, and every other upload failed too), and the offset acknowledged before
is kept (storage/storage_full.py, server/tus/handler.py, server/errors.py)."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy.exc import DBAPIError

from storage.storage_full import storage_full
from tests.blob_stores import on_s3
from tests.conftest import TUS, tus_create, tus_patch
from tests.in_process_server import InProcessServer


def _sqlite_full_error(tmp_path: Path) -> sqlite3.OperationalError:
    """SQLite's own "database or disk is full": a database not allowed past 8 pages."""
    db = sqlite3.connect(tmp_path / "small.db")
    try:
        db.execute("CREATE TABLE t (x BLOB)")
        db.execute("PRAGMA max_page_count = 8")
        for _ in range(64):
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(4096),))
    except sqlite3.OperationalError as error:
        return error
    finally:
        db.close()
    raise AssertionError("the database grew past its page limit")


def test_storage_full_errors_are_told_apart(tmp_path: Path) -> None:
    assert storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    full = _sqlite_full_error(tmp_path)
    assert storage_full(DBAPIError.instance("INSERT", None, full, sqlite3.Error))
    assert not storage_full(OSError(errno.EIO, "Input/output error"))
    assert not storage_full(FileNotFoundError(errno.ENOENT, "gone"))
    locked = sqlite3.OperationalError("database is locked")
    assert not storage_full(DBAPIError.instance("BEGIN", None, locked, sqlite3.Error))
    assert not storage_full(ValueError("bad"))


@pytest.fixture
def small_uploads_disk(tmp_path: Path) -> Iterator[Path]:
    """A data folder whose uploads folder is a 1 MiB file system of its own."""
    if on_s3():
        pytest.skip("the uploads are in the S3 store in this run, not in the data folder")
    data = tmp_path / "data"
    uploads = data / "uploads"
    uploads.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(uploads)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip()}")
    try:
        yield data
    finally:
        subprocess.run(["umount", "--lazy", str(uploads)], check=True)


def test_a_patch_that_fills_the_disk_gets_507_and_frees_what_it_took(
    small_uploads_disk: Path,
) -> None:
    data = small_uploads_disk
    server = InProcessServer(data).start()
    try:
        body = os.urandom(1_500_000)  # more than the disk holds
        created = tus_create(server.url, len(body))
        upload = created.headers["Location"]
        assert tus_patch(upload, 0, body[:300_000]).status_code == 204

        full = tus_patch(upload, 300_000, body[300_000:])
        assert full.status_code == 507, full.text
        assert full.json()["error"]["code"] == "ERR_STORAGE_FULL"
        assert full.headers["Retry-After"] == "60"
        assert full.headers["Tus-Resumable"] == "1.0.0"
        head = requests.head(upload, headers=TUS, timeout=30)
        assert head.headers["Upload-Offset"] == "300000"
        # Cut back to what was acknowledged: the rest of the disk is free for others.
        upload_file = data / "uploads" / upload.rsplit("/", 1)[1]
        assert upload_file.stat().st_size == 300_000
        other = tus_create(server.url, 200_000).headers["Location"]
        assert tus_patch(other, 0, body[:200_000]).status_code == 204
        # And the first upload resumes from its offset where there is room for it.
        assert tus_patch(upload, 300_000, body[300_000:400_000]).status_code == 204
        assert requests.head(upload, headers=TUS, timeout=30).headers["Upload-Offset"] == "400000"
        assert upload_file.read_bytes() == body[:400_000]
    finally:
        server.stop()
