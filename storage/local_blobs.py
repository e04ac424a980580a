"""Blob store in a folder: the embedded default, or a folder that all nodes mount.

The file calls are plain blocking ones run in executor threads: each PATCH needs write +
fsync + truncate on one open file, which aiofiles does not offer as one unit (no fsync, no
truncate-at-offset), and a hop per call would only add latency (`LocalUploadWriter` makes as
few hops as it can).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiofiles
import numpy as np

from storage.blob_store import BlobLost, check_upload_id

READ_BLOCK = 256 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class LocalUploadWriter:
    """Appends one PATCH body at a known offset; a failed PATCH is undone by `rollback`.

    Each call that touches the file is a hop to an executor thread and back, and within the
    hop every system call releases the GIL and takes it back from the event loop, a few
    futex calls each while the loop is busy: under 200 uploading clients that hand-off,
    not the write, was what a small upload's bytes cost (`bench/README.md`, "Many small
    uploads"). So the writer makes as few hops, and as few calls in each, as it can:

    - the file is opened at the first hop, not before, and by its descriptor (`os.open`,
      `os.pwrite`: no buffered file object, whose open adds three calls and whose writes
      need a seek and a flush);
    - the bytes handed to `write` wait in memory for the next hop (the next `write`, or
      `sync`, which writes and fsyncs them in one); at most one batch (the handler's,
      1 MiB) waits so, and bytes that wait are not acknowledged, as nothing is before
      `sync`;
    - `close` after a `sync` closes on the event loop: the file holds nothing unwritten
      then, so close(2) has nothing to flush, even on a network file system.

    A body that fits in one batch (every small upload's) costs one hop: open, write, fsync.

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
        self._waiting = b""  # given to `write`, not yet to the file
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

    def _write(self) -> None:
        """The waiting bytes to the file, after everything this writer was given before."""
        at = self.start + self.written - len(self._waiting)
        _pwrite_all(self._opened(), self._waiting, at)
        self._waiting = b""
        self._unsynced = True

    async def write(self, data: bytes) -> None:
        if self._waiting:
            await asyncio.to_thread(self._write)
        self._waiting = data
        self.written += len(data)
        if self._hash is not None:
            self._hash.update(data)

    def digest(self) -> bytes:
        assert self._hash is not None
        return self._hash.digest()

    def _sync(self) -> None:
        if self._waiting:
            self._write()
        os.fsync(self._opened())
        if self._name_unsynced:
            self._sync_folder()
            self._name_unsynced = False
        self._unsynced = False

    async def sync(self, final: bool) -> None:
        await asyncio.to_thread(self._sync)

    def _rollback(self, to_offset: int) -> None:
        os.ftruncate(self._opened(), to_offset)
        self._sync()  # nothing waits by now (`rollback` dropped it): only the fsync

    async def rollback(self, to_offset: int) -> None:
        """Drop what this request wrote past `to_offset` (the last committed offset)."""
        self._waiting = b""
        if self._fd is not None:  # else nothing of this request reached the file
            await asyncio.to_thread(self._rollback, to_offset)
        self.written = to_offset - self.start

    async def close(self) -> None:
        # Bytes still waiting were never synced, so never acknowledged: dropped.
        self._waiting = b""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._unsynced:
            await asyncio.to_thread(os.close, fd)
        else:
            os.close(fd)


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
