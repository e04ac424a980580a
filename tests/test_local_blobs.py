"""The folder blob store's upload writer (storage/local_blobs.py): what reaches the file and
when, how many hops to executor threads a POST and a PATCH body cost, that the file an
upload's first bytes make is durable with them, and that a batch written while the next
arrives is never lost, skipped or written under a closed file (storage/writeback.py too)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from storage import local_blobs, writeback
from storage.blob_store import BlobLost
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


def _folder_syncs(store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders the store fsyncs from now on."""
    synced: list[Path] = []
    real = store.sync_uploads_folder

    def sync_uploads_folder() -> None:
        synced.append(store.uploads)
        real()

    monkeypatch.setattr(store, "sync_uploads_folder", sync_uploads_folder)
    return synced


def _store(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path)
    asyncio.run(store.create(UPLOAD_ID, None))
    return store


def test_a_small_upload_costs_one_hop_that_makes_writes_and_fsyncs_its_file(
    tmp_path: Path, hops: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST makes no file (no hop); the PATCH's one hop creates the file, writes the body and
    fsyncs it and then the folder, so the new name is durable before the offset commits."""
    store = LocalBlobStore(tmp_path)
    synced_folders = _folder_syncs(store, monkeypatch)

    async def post_and_patch() -> bool:
        await store.create(UPLOAD_ID, 90_000)
        made_by_post = store.upload_path(UPLOAD_ID).exists()
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"a" * 90_000)
        await writer.sync(final=True)
        await writer.close()
        return made_by_post

    assert asyncio.run(post_and_patch()) is False
    assert hops == ["_sync"]
    assert synced_folders == [store.uploads]
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"a" * 90_000


def test_a_later_patch_opens_the_file_it_finds_and_syncs_no_folder(
    tmp_path: Path, hops: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    synced_folders = _folder_syncs(store, monkeypatch)

    async def patches() -> None:
        for offset, body in ((0, b"first"), (5, b"-second")):
            writer = await store.open_writer(UPLOAD_ID, offset)
            await writer.write(body)
            await writer.sync(final=False)
            await writer.close()

    asyncio.run(patches())
    assert hops == ["_sync", "_sync"]
    assert synced_folders == [store.uploads]  # once, by the PATCH that made the file
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"first-second"


def test_a_patch_at_offset_zero_that_finds_a_file_syncs_the_folder_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first PATCH that made the file and died before its fsync left a name that may not
    be durable: the next PATCH at offset 0 fsyncs the folder as if it had made it."""
    store = LocalBlobStore(tmp_path)
    store.upload_path(UPLOAD_ID).write_bytes(b"never acknowledged")
    synced_folders = _folder_syncs(store, monkeypatch)

    async def patch() -> None:
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"new")
        await writer.sync(final=False)
        await writer.close()

    asyncio.run(patch())
    assert synced_folders == [store.uploads]
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"new"


def test_an_empty_upload_has_its_file_at_creation(tmp_path: Path) -> None:
    # Complete at once, and read as such (validation, streaming): no PATCH will make it.
    store = LocalBlobStore(tmp_path)
    asyncio.run(store.create(UPLOAD_ID, 0))
    assert store.upload_path(UPLOAD_ID).read_bytes() == b""


def test_a_missing_file_past_offset_zero_is_bytes_lost_and_nothing_is_made(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path)

    async def patch_at(offset: int) -> None:
        writer = await store.open_writer(UPLOAD_ID, offset)
        try:
            await writer.write(b"more")
            await writer.sync(final=False)
        finally:
            await writer.close()

    with pytest.raises(BlobLost, match="its file is missing"):
        asyncio.run(patch_at(3))
    assert not store.upload_path(UPLOAD_ID).exists()
    asyncio.run(patch_at(0))  # offset 0: nothing was acknowledged, the file is made
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"more"


def test_a_patch_that_fails_before_its_first_hop_touches_no_file(
    tmp_path: Path, hops: list[str]
) -> None:
    store = LocalBlobStore(tmp_path)

    async def refused_patch() -> None:
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"refused")  # waits in memory
        await writer.rollback(0)
        await writer.close()

    asyncio.run(refused_patch())
    assert hops == []
    assert not store.upload_path(UPLOAD_ID).exists()


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
    assert hops == ["_write", "_write", "_sync"]


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
        hops.clear()
        await first.write(b"-waiting")  # the batch before goes to the file meanwhile
        await first.close()
        # Close waits for that hop; bytes went to the file since the fsync, so closing may
        # have to flush: in a thread.
        assert hops == ["_write", "close"]
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


def test_a_batch_goes_to_the_file_while_the_next_one_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`write` starts the waiting batch's hop and returns without waiting for it; the disk
    is asked to start writing that batch (no wait) in the same hop; the next call that
    touches the file waits for the hop first, so the bytes land in order."""
    store = _store(tmp_path)
    entered, release = threading.Event(), threading.Event()
    real_pwrite_all = local_blobs._pwrite_all
    writebacks: list[tuple[int, int]] = []

    def held_pwrite_all(fd: int, blocks: list[bytes], offset: int) -> None:
        entered.set()
        assert release.wait(10), "the hop was never let go"
        real_pwrite_all(fd, blocks, offset)

    def recorded_writeback(fd: int, offset: int, length: int) -> bool:
        writebacks.append((offset, length))
        return True

    monkeypatch.setattr(local_blobs, "_pwrite_all", held_pwrite_all)
    monkeypatch.setattr(local_blobs, "start_writeback", recorded_writeback)

    async def patch() -> None:
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"first", b"-batch")
        # The first batch's hop starts and is held; this call returns all the same.
        await asyncio.wait_for(writer.write(b"-second"), 5)
        assert await asyncio.to_thread(entered.wait, 5)  # the hop runs, held, file open
        assert store.upload_path(UPLOAD_ID).read_bytes() == b""
        syncing = asyncio.ensure_future(writer.sync(final=True))
        await asyncio.sleep(0.05)
        assert not syncing.done()  # waits for the held hop, then writes the rest
        release.set()
        await syncing
        await writer.close()

    asyncio.run(patch())
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"first-batch-second"
    # The batch that went ahead was sent on to the disk; the last one the fsync covers.
    assert writebacks == [(0, len(b"first-batch"))]


def test_a_batch_whose_hop_failed_is_written_by_the_sync_or_the_sync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hop that fails (a full disk, say) after `write` returned: its failure is raised by
    the next call, and its bytes wait again, so the `sync` that would acknowledge them
    writes them first; they are never skipped."""
    store = _store(tmp_path)
    real_pwrite_all = local_blobs._pwrite_all
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def failing_once(fd: int, blocks: list[bytes], offset: int) -> None:
        if failures:
            raise failures.pop()
        real_pwrite_all(fd, blocks, offset)

    monkeypatch.setattr(local_blobs, "_pwrite_all", failing_once)

    async def patch() -> int:
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"one")
        await writer.write(b"-two")  # "one"'s hop starts, and fails
        with pytest.raises(OSError, match="No space"):
            await writer.write(b"-three")  # refused: not taken
        await writer.sync(final=False)
        await writer.close()
        return writer.start + writer.written

    assert asyncio.run(patch()) == len(b"one-two")
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"one-two"


def test_a_cancelled_close_closes_the_file_when_the_hop_in_flight_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is never closed under a hop that still writes to it (its descriptor could
    be another file's by then), even when the caller of `close` is cancelled."""
    store = _store(tmp_path)
    entered, release = threading.Event(), threading.Event()
    real_pwrite_all = local_blobs._pwrite_all
    held: list[int] = []  # the descriptor the held hop writes to
    closed: list[int] = []
    real_close = os.close

    def held_pwrite_all(fd: int, blocks: list[bytes], offset: int) -> None:
        held.append(fd)
        entered.set()
        assert release.wait(10), "the hop was never let go"
        real_pwrite_all(fd, blocks, offset)

    def recorded_close(fd: int) -> None:
        # os.close is the process's: anything else closing a descriptor meanwhile (the
        # loop, a thread pool) is seen too, so only the writer's descriptor is looked at.
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(local_blobs, "_pwrite_all", held_pwrite_all)
    monkeypatch.setattr(local_blobs.os, "close", recorded_close)

    async def cancelled_close() -> None:
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"in-flight")
        await writer.write(b"-waiting")
        assert await asyncio.to_thread(entered.wait, 5)  # the hop runs, held, file open
        closed.clear()  # a number closed before the file was opened may be its number now
        closing = asyncio.ensure_future(writer.close())
        await asyncio.sleep(0.05)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert held[0] not in closed  # the hop still holds the file
        release.set()
        for _ in range(500):
            if held[0] in closed:
                break
            await asyncio.sleep(0.01)

    asyncio.run(cancelled_close())
    assert closed.count(held[0]) == 1
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"in-flight"


def test_blocks_are_written_whole_and_in_order_when_the_kernel_takes_a_few_bytes_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pwritev may write less than it was given; the rest is written, from the right block
    and the right byte, and empty blocks are skipped."""
    real_pwritev = os.pwritev
    calls: list[tuple[int, int]] = []

    def three_bytes_at_most(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append((offset, len(buffers)))
        return real_pwritev(fd, [bytes(b"".join(buffers)[:3])], offset)

    monkeypatch.setattr(local_blobs.os, "pwritev", three_bytes_at_most)
    path = tmp_path / "blocks"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        local_blobs._pwrite_all(fd, [b"ab", b"", b"cdefg", b"h"], 4)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\0\0\0\0abcdefgh"
    # Each call starts at the byte where the last one stopped, from the block it was in.
    assert calls == [(4, 3), (7, 2), (10, 2)]


def test_start_writeback_asks_the_kernel_and_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"x" * 100_000)
    fd = os.open(path, os.O_RDWR)
    try:
        assert writeback.start_writeback(fd, 0, 100_000) is sys.platform.startswith("linux")
        assert writeback.start_writeback(fd, 0, 0) is False  # nothing to write
    finally:
        os.close(fd)
    assert writeback.start_writeback(-1, 0, 10) is False  # a bad descriptor: only a hint


def test_told_that_more_follows_a_batch_goes_at_once_and_nothing_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-body batches (`more_follows`) start their hop at once: a PATCH holds the batch in
    its hop and the one arriving, never a third waiting between them."""
    store = _store(tmp_path)
    release = threading.Event()
    real_pwrite_all = local_blobs._pwrite_all
    hopped: list[bytes] = []

    def held_pwrite_all(fd: int, blocks: list[bytes], offset: int) -> None:
        assert release.wait(10), "the hop was never let go"
        hopped.append(b"".join(blocks))
        real_pwrite_all(fd, blocks, offset)

    monkeypatch.setattr(local_blobs, "_pwrite_all", held_pwrite_all)

    async def patch() -> None:
        writer = await store.open_writer(UPLOAD_ID, 0)
        await writer.write(b"one", b"-batch", more_follows=True)
        assert writer._waiting == []  # in its hop, held
        release.set()
        await writer.write(b"-two", more_follows=True)  # waits for the first hop, then goes
        await writer.write(b"-last")  # ends the body: waits for the fsync's hop
        assert writer._waiting == [b"-last"]
        await writer.sync(final=True)
        await writer.close()

    asyncio.run(patch())
    assert hopped == [b"one-batch", b"-two", b"-last"]
    assert store.upload_path(UPLOAD_ID).read_bytes() == b"one-batch-two-last"
