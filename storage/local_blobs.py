"""Blob store in a folder: the embedded default, or a folder that all nodes mount.

The file calls are plain blocking ones run in executor threads: each PATCH needs write +
fsync + truncate on one open file, which aiofiles does not offer as one unit (no fsync, no
truncate-at-offset), and a hop per call would only add latency (`LocalUploadWriter` makes as
few hops as it can).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiofiles
import numpy as np

from storage.blob_store import BlobLost, check_upload_id
from storage.writeback import start_writeback

READ_BLOCK = 256 * 1024
# The most blocks one pwritev(2) takes (Linux: 1024).
IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, blocks: list[bytes], offset: int) -> None:
    """Write `blocks` one after another at `offset`, as one vectored call where it can:
    the blocks go to the kernel as the network handed them over, never joined in memory
    (a join would copy each byte of a large PATCH once more)."""
    views = [memoryview(block) for block in blocks if block]
    while views:
        written = os.pwritev(fd, views[:IOV_MAX], offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


class LocalUploadWriter:
    """Appends one PATCH body at a known offset; a failed PATCH is undone by `rollback`.

    Each call that touches the file is a hop to an executor thread and back, and within the
    hop every system call releases the GIL and takes it back from the event loop, a few
    futex calls each while the loop is busy: under 200 uploading clients that hand-off,
    not the write, was what a small upload's bytes cost (`bench/README.md`, "Many small
    uploads"). So the writer makes as few hops, and as few calls in each, as it can:

    - the file is opened at the first hop, not before, and by its descriptor (`os.open`,
      `os.pwritev`: no buffered file object, whose open adds three calls and whose writes
      need a seek and a flush);
    - the blocks handed to `write` wait in memory for the next hop (the next `write`, or
      `sync`, which writes and fsyncs them in one); at most one batch (the handler's,
      1 MiB) waits so, and bytes that wait are not acknowledged, as nothing is before
      `sync`;
    - `close` after a `sync` closes on the event loop: the file holds nothing unwritten
      then, so close(2) has nothing to flush, even on a network file system.

    A body that fits in one batch (every small upload's) costs one hop: open, write, fsync.

    A longer body's batches go to the file while the next batch arrives: told that more
    follows (`more_follows`), `write` starts the batch's hop at once and returns without
    waiting for it (the next `write`, `sync`, `rollback` or `close` waits for it first, so
    hops never overlap one another); so a PATCH holds the batch in its hop and the one
    arriving, no more. Not told, the batch waits, and a batch waiting before it goes to the
    file the same way. Each such
    hop also starts the disk writing its batch without waiting (`start_writeback`), so the
    `sync` that acknowledges the body waits for about the last batch only, not for the
    whole body (`bench/README.md`, "Upload throughput"). A hop that fails leaves its batch
    waiting again: `sync` writes it or fails, never skips it.

    An upload's file is made by its first bytes (`LocalBlobStore.create` makes none): at
    offset 0 a missing file is created, and the folder is fsynced with the bytes
    (`sync_folder`), before any offset that counts on the file is committed; so it is when
    a PATCH at offset 0 finds a file (one that died before its commit may have made it).
    Past offset 0 a missing file is acknowledged bytes lost (BlobLost, raised by the first
    hop)."""

    def __init__(
        self,
        path: Path,
        offset: int,
        checksum_algorithm: str | None,
        sync_folder: Callable[[], None],
    ) -> None:
        self._path = path
        self._sync_folder = sync_folder
        self._fd: int | None = None  # opened by the first hop
        # At offset 0 no offset was ever committed on the file, so its name may not be
        # durable yet (made by this writer, or by a PATCH that died before its fsync).
        self._name_unsynced = offset == 0
        self.start = offset
        self.written = 0
        self._hash = hashlib.new(checksum_algorithm) if checksum_algorithm else None
        self._waiting: list[bytes] = []  # given to `write`, not yet to the file
        self._waiting_bytes = 0
        # The hop writing the batch before the waiting one, started by `write`, not awaited,
        # and that batch (its blocks and size), for it to wait again if the hop fails.
        self._in_flight: asyncio.Future[None] | None = None
        self._in_flight_batch: tuple[list[bytes], int] = ([], 0)
        self._unsynced = False  # given to the file since the last fsync

    def _opened(self) -> int:
        if self._fd is not None:
            return self._fd
        if self.start == 0:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                return self._fd
            except FileExistsError:
                pass  # a file an earlier PATCH made: opened as any other below
        try:
            fd = os.open(self._path, os.O_RDWR)
        except FileNotFoundError:
            raise BlobLost(f"upload {self._path.name}: its file is missing") from None
        try:
            # Bytes past the durable offset are a dead PATCH's leftovers: never acknowledged.
            os.ftruncate(fd, self.start)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _write(self, blocks: list[bytes], at: int, size: int) -> None:
        """One batch to the file, and on its way to the disk, while the loop takes in the
        next."""
        fd = self._opened()
        self._unsynced = True
        _pwrite_all(fd, blocks, at)
        start_writeback(fd, at, size)

    async def _settle(self) -> None:
        """Wait for the batch in flight. If its hop failed, its blocks wait again (so a
        later `sync` writes them or fails, never skips them) and the failure is raised."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        try:
            # Shielded: a cancelled caller must not leave the hop running unawaited, or
            # `close` could close the file under it.
            await asyncio.shield(in_flight)
        except asyncio.CancelledError:
            if not in_flight.done():
                self._in_flight = in_flight  # still running: `close` waits for it
            raise
        except BaseException:
            blocks, size = self._in_flight_batch
            self._in_flight_batch = ([], 0)
            self._waiting[:0] = blocks
            self._waiting_bytes += size
            raise
        self._in_flight_batch = ([], 0)  # in the file: its memory may go

    async def write(self, *blocks: bytes, more_follows: bool = False) -> None:
        await self._settle()
        if more_follows:
            # The body goes on: what was given goes to the file now, nothing waits.
            if self._waiting or blocks:
                self._start_hop(self._waiting + list(blocks))
            self._waiting, self._waiting_bytes = [], 0
        else:
            if self._waiting:  # never more than one batch waits
                self._start_hop(self._waiting)
            self._waiting = list(blocks)
            self._waiting_bytes = sum(map(len, blocks))
        self.written += sum(map(len, blocks))
        if self._hash is not None:
            for block in blocks:
                self._hash.update(block)

    def _start_hop(self, batch: list[bytes]) -> None:
        """The batch's hop, started and not awaited; it starts where the bytes given before
        it end (everything before it is in the file or in the hop just settled)."""
        size = sum(map(len, batch))
        at = self.start + self.written - self._waiting_bytes
        self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._write, batch, at, size))
        self._in_flight_batch = (batch, size)

    def digest(self) -> bytes:
        assert self._hash is not None
        return self._hash.digest()

    def _sync(self, blocks: list[bytes], at: int) -> None:
        fd = self._opened()
        if blocks:
            self._unsynced = True
            _pwrite_all(fd, blocks, at)
        os.fsync(fd)
        if self._name_unsynced:
            self._sync_folder()
            self._name_unsynced = False
        self._unsynced = False

    async def sync(self, final: bool) -> None:
        await self._settle()
        blocks, at = self._waiting, self.start + self.written - self._waiting_bytes
        await asyncio.to_thread(self._sync, blocks, at)
        self._waiting, self._waiting_bytes = [], 0

    def _rollback(self, to_offset: int) -> None:
        os.ftruncate(self._opened(), to_offset)
        self._sync([], to_offset)

    async def rollback(self, to_offset: int) -> None:
        """Drop what this request wrote past `to_offset` (the last committed offset)."""
        with contextlib.suppress(Exception):
            # A failed hop's bytes are dropped with the rest; the truncation below reports
            # a file that is gone (BlobLost) or cannot be written.
            await self._settle()
        self._waiting, self._waiting_bytes = [], 0
        if self._fd is not None:  # else nothing of this request reached the file
            await asyncio.to_thread(self._rollback, to_offset)
        self.written = to_offset - self.start

    async def close(self) -> None:
        # Bytes still waiting were never synced, so never acknowledged: dropped.
        self._waiting, self._waiting_bytes = [], 0
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None and not in_flight.done():
            # Closed when its hop ends, not under it, even if this caller is cancelled.
            try:
                await asyncio.shield(in_flight)
            except asyncio.CancelledError:
                in_flight.add_done_callback(lambda _: self._close_now())
                raise
            except Exception:
                pass  # its bytes were never acknowledged
        elif in_flight is not None and not in_flight.cancelled():
            in_flight.exception()  # retrieved: a failed hop nobody waits for is no error
        await self._close_file()

    def _close_now(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def _close_file(self) -> None:
        if self._fd is not None and self._unsynced:
            fd, self._fd = self._fd, None
            await asyncio.to_thread(os.close, fd)
        else:
            self._close_now()


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "uploads"
        self.carries = root / "carry"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.carries.mkdir(parents=True, exist_ok=True)
        # Kept open: every upload's first PATCH fsyncs the folder its file was made in, and
        # open + close around each fsync were two more calls in that PATCH's hop.
        self._uploads_fd: int | None = os.open(self.uploads, os.O_RDONLY | os.O_DIRECTORY)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        fd, self._uploads_fd = self._uploads_fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        # A store dropped without `close` (tests, tools) does not keep its descriptor.
        if getattr(self, "_uploads_fd", None) is not None:
            os.close(self._uploads_fd)  # type: ignore[arg-type]

    def sync_uploads_folder(self) -> None:
        """fsync the uploads folder: a file made in it is durable under its name after."""
        if self._uploads_fd is None:
            _fsync_dir(self.uploads)  # closed store: as any other folder
        else:
            os.fsync(self._uploads_fd)

    def _ping(self) -> None:
        # Really write: a full disk, a read-only remount or a vanished shared mount all
        # show here, where a permission check would not (and root passes those anyway).
        probe = self.uploads / f".ready-{os.getpid()}"
        probe.write_bytes(b"1")
        probe.unlink()

    async def ping(self) -> None:
        await asyncio.to_thread(self._ping)

    def upload_path(self, upload_id: str) -> Path:
        return self.uploads / check_upload_id(upload_id)

    def _create_empty(self, upload_id: str) -> None:
        # "w": a file a failed first PATCH made holds nothing acknowledged; emptied.
        with open(self.upload_path(upload_id), "wb") as f:
            os.fsync(f.fileno())
        self.sync_uploads_folder()

    async def create(self, upload_id: str, length: int | None) -> None:
        """Only an empty upload's file is made here (it is complete at once, and read as
        such); any other is made by its first bytes (`LocalUploadWriter`), which spares
        every POST a hop to a thread and two fsyncs."""
        check_upload_id(upload_id)
        if length == 0:
            await asyncio.to_thread(self._create_empty, upload_id)

    async def open_writer(
        self, upload_id: str, offset: int, checksum_algorithm: str | None = None
    ) -> LocalUploadWriter:
        """No hop yet: the file is opened by the writer's first (`LocalUploadWriter`)."""
        return LocalUploadWriter(
            self.upload_path(upload_id), offset, checksum_algorithm, self.sync_uploads_folder
        )

    def _concatenate(self, final_id: str, part_ids: list[str]) -> int:
        with open(self.upload_path(final_id), "wb") as out:
            for part in part_ids:
                with open(self.upload_path(part), "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        self.sync_uploads_folder()
        return size

    async def concatenate(self, final_id: str, part_ids: list[str]) -> int:
        return await asyncio.to_thread(self._concatenate, final_id, part_ids)

    def _delete(self, upload_id: str) -> int:
        path = self.upload_path(upload_id)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    async def delete(self, upload_id: str) -> int:
        return await asyncio.to_thread(self._delete, upload_id)

    @asynccontextmanager
    async def local_copy(self, upload_id: str) -> AsyncIterator[Path]:
        yield self.upload_path(upload_id)

    async def stream(self, upload_id: str, length: int) -> AsyncIterator[bytes]:
        if length <= 0:
            return  # nothing to read, and an upload without bytes may have no file yet
        remaining = length
        async with aiofiles.open(self.upload_path(upload_id), "rb") as f:
            while remaining > 0:
                data = await f.read(min(READ_BLOCK, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data

    def _write_carry(self, chunk_id: int, samples: np.ndarray) -> str:
        path = self.carries / f"{int(chunk_id)}.f32"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.carries)
        return path.name

    async def write_carry(self, chunk_id: int, samples: np.ndarray) -> str:
        return await asyncio.to_thread(self._write_carry, chunk_id, samples)

    async def read_carry(self, name: str) -> np.ndarray:
        path = self.carries / Path(name).name
        return await asyncio.to_thread(np.fromfile, path, dtype=np.float32)

    async def delete_carry(self, name: str) -> None:
        await asyncio.to_thread((self.carries / Path(name).name).unlink, missing_ok=True)
