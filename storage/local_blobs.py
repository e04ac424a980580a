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
from collections.abc import AsyncIterator
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


class LocalUploadWriter:
    """Appends one PATCH body at a known offset; a failed PATCH is undone by `rollback`.

    Each call that touches the file is a hop to an executor thread and back, which costs
    more CPU than a small upload's write itself: a profile of one server under 200 clients
    uploading 90 KB chunks had the folder store's hops at about 8 % of the time it held the
    GIL (`bench/README.md`, "Many small uploads"). So the bytes handed to `write` wait in
    memory for the next hop (the next `write`, or `sync`, which writes and fsyncs them in
    one), and `close` after a `sync` closes on the event loop: the file holds nothing
    unwritten then, so close(2) has nothing to flush, even on a network file system. A
    body that fits in one batch (every small upload's) costs one hop to open and one to
    write and fsync, not four. At most one batch (the handler's, 1 MiB) waits so; bytes
    that wait are not acknowledged, as nothing is before `sync`."""

    def __init__(self, path: Path, offset: int, checksum_algorithm: str | None) -> None:
        self._file = open(path, "r+b")  # noqa: SIM115 - closed in close()
        # Bytes past the durable offset are a dead PATCH's leftovers: never acknowledged.
        self._file.truncate(offset)
        self._file.seek(offset)
        self.start = offset
        self.written = 0
        self._hash = hashlib.new(checksum_algorithm) if checksum_algorithm else None
        self._waiting = b""  # given to `write`, not yet to the file
        self._unsynced = False  # given to the file since the last fsync

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._unsynced = True

    async def write(self, data: bytes) -> None:
        if self._waiting:
            await asyncio.to_thread(self._write, self._waiting)
        self._waiting = data
        self.written += len(data)
        if self._hash is not None:
            self._hash.update(data)

    def digest(self) -> bytes:
        assert self._hash is not None
        return self._hash.digest()

    def _sync(self) -> None:
        if self._waiting:
            self._write(self._waiting)
            self._waiting = b""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._unsynced = False

    async def sync(self, final: bool) -> None:
        await asyncio.to_thread(self._sync)

    def _rollback(self, to_offset: int) -> None:
        self._file.truncate(to_offset)
        self._file.seek(to_offset)
        self._sync()  # nothing waits by now (`rollback` dropped it): only the fsync

    async def rollback(self, to_offset: int) -> None:
        """Drop what this request wrote past `to_offset` (the last committed offset)."""
        self._waiting = b""
        await asyncio.to_thread(self._rollback, to_offset)
        self.written = to_offset - self.start

    async def close(self) -> None:
        # Bytes still waiting were never synced, so never acknowledged: dropped.
        self._waiting = b""
        if self._unsynced:
            await asyncio.to_thread(self._file.close)
        else:
            self._file.close()


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "uploads"
        self.carries = root / "carry"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.carries.mkdir(parents=True, exist_ok=True)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

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

    def _create(self, upload_id: str) -> None:
        with open(self.upload_path(upload_id), "xb") as f:
            os.fsync(f.fileno())
        _fsync_dir(self.uploads)

    async def create(self, upload_id: str, length: int | None) -> None:
        await asyncio.to_thread(self._create, upload_id)

    async def open_writer(
        self, upload_id: str, offset: int, checksum_algorithm: str | None = None
    ) -> LocalUploadWriter:
        try:
            return await asyncio.to_thread(
                LocalUploadWriter, self.upload_path(upload_id), offset, checksum_algorithm
            )
        except FileNotFoundError:
            raise BlobLost(f"upload {upload_id}: its file is missing") from None

    def _concatenate(self, final_id: str, part_ids: list[str]) -> int:
        with open(self.upload_path(final_id), "r+b") as out:
            out.truncate(0)
            for part in part_ids:
                with open(self.upload_path(part), "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
            return out.tell()

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
