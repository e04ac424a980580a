"""The folder blob store's upload writer (storage/local_blobs.py): what reaches the file and
when, and how many hops to executor threads a PATCH body costs."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from storage.local_blobs import LocalBlobStore

UPLOAD_ID = "upload-0001"


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of each function the store hands to an executor thread."""
    seen: list[str] = []
    real = asyncio.to_thread

    async def counted(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(function, "__name__", repr(function)))
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return seen


def _store(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path)
    asyncio.run(store.create(UPLOAD_ID, None))
    return store


def test_a_body_in_one_batch_costs_two_hops_open_and_write_with_fsync(
    tmp_path: Path, hops: list[str]
) -> None:
    store = _store(tmp_path)
    hops.clear()

    async def patch() -> None:
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"a" * 90_000)
        await writer.sync(final=True)
        await writer.close()

    asyncio.run(patch())
    assert hops == ["LocalUploadWriter", "_sync"]
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"a" * 90_000


def test_batches_reach_the_file_in_order_one_hop_each(tmp_path: Path, hops: list[str]) -> None:
    store = _store(tmp_path)
    hops.clear()

    async def patch() -> str:
        writer = await store.open_writer(UPLOAD_ID, 0, "sha1")
        for block in (b"1" * 10, b"2" * 20, b"3" * 30):
            await writer.write(block)
        await writer.sync(final=False)
        await writer.close()
        return writer.digest().hex()

    digest = asyncio.run(patch())
    body = b"1" * 10 + b"2" * 20 + b"3" * 30
    assert store.upload_path(UPLOAD_ID).read_bytes() == body
    assert digest == hashlib.sha1(body).hexdigest()
    assert hops == ["LocalUploadWriter", "_write", "_write", "_sync"]


def test_bytes_never_synced_are_not_kept_and_the_next_writer_starts_clean(
    tmp_path: Path, hops: list[str]
) -> None:
    """Nothing counts before `sync`: bytes still waiting are dropped at close, and bytes a
    dead request did hand to the file lie past the committed offset, where the next writer
    cuts them off."""
    store = _store(tmp_path)

    async def patches() -> None:
        first = await store.open_writer(UPLOAD_ID, 0)
        await first.write(b"kept")
        await first.sync(final=False)  # committed offset: 4
        await first.write(b"-handed-to-the-file")
        await first.write(b"-waiting")
        hops.clear()
        await first.close()
        # Bytes went to the file since the fsync: closing may have to flush, so in a thread.
        assert hops == ["close"]
        assert store.upload_path(UPLOAD_ID).read_bytes() == b"kept-handed-to-the-file"
        second = await store.open_writer(UPLOAD_ID, 4)
        await second.write(b"+more")
        await second.sync(final=True)
        await second.close()

    asyncio.run(patches())
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"kept+more"


def test_rollback_drops_what_waits_and_what_reached_the_file(tmp_path: Path) -> None:
    store = _store(tmp_path)

    async def patch() -> int:
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"committed")
        await writer.sync(final=False)
        await writer.write(b"-written")
        await writer.write(b"-waiting")
        await writer.rollback(9)
        await writer.write(b"!")
        await writer.sync(final=True)
        await writer.close()
        return writer.start + writer.written

    assert asyncio.run(patch()) == 10
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"committed!"
