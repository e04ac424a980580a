"""Local blob store: upload bytes and transcription carries under the data folder.

Writes are plain blocking file calls meant to run in an executor thread: each PATCH
needs write + fsync + truncate on one open file, which aiofiles does not offer as one
unit (no fsync, no truncate-at-offset), and a hop per call would only add latency.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np

_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class BadBlobId(ValueError):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """Appends one PATCH body at a known offset; a failed PATCH is undone by `rollback`."""

    def __init__(self, path: Path, offset: int, checksum_algorithm: str | None) -> None:
        self._file = open(path, "r+b")  # noqa: SIM115 - closed in close()
        # Bytes past the durable offset are a dead PATCH's leftovers: never acknowledged.
        self._file.truncate(offset)
        self._file.seek(offset)
        self.start = offset
        self.written = 0
        self._hash = hashlib.new(checksum_algorithm) if checksum_algorithm else None

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.written += len(data)
        if self._hash is not None:
            self._hash.update(data)

    def digest(self) -> bytes:
        assert self._hash is not None
        return self._hash.digest()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def rollback(self, to_offset: int) -> None:
        """Drop what this request wrote past `to_offset` (the last committed offset)."""
        self._file.truncate(to_offset)
        self._file.seek(to_offset)
        self.written = to_offset - self.start
        self.sync()

    def close(self) -> None:
        self._file.close()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "uploads"
        self.carries = root / "carry"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.carries.mkdir(parents=True, exist_ok=True)

    def upload_path(self, upload_id: str) -> Path:
        # Ids come from URLs: only our own alphabet may reach the file system.
        if not _ID.match(upload_id):
            raise BadBlobId(upload_id)
        return self.uploads / upload_id

    def create(self, upload_id: str) -> None:
        path = self.upload_path(upload_id)
        with open(path, "xb") as f:
            os.fsync(f.fileno())
        _fsync_dir(self.uploads)

    def open_writer(
        self, upload_id: str, offset: int, checksum_algorithm: str | None = None
    ) -> BlobWriter:
        return BlobWriter(self.upload_path(upload_id), offset, checksum_algorithm)

    def concatenate(self, final_id: str, part_ids: list[str]) -> int:
        total = 0
        with open(self.upload_path(final_id), "r+b") as out:
            out.truncate(0)
            for part in part_ids:
                with open(self.upload_path(part), "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
            total = out.tell()
        return total

    def delete(self, upload_id: str) -> int:
        """Remove an upload's bytes; returns the bytes reclaimed."""
        path = self.upload_path(upload_id)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def carry_path(self, chunk_id: int) -> Path:
        return self.carries / f"{int(chunk_id)}.f32"

    def write_carry(self, chunk_id: int, samples: np.ndarray) -> str:
        """Durable before the transaction that references it commits; rewritten identically
        if a killed worker's job runs again."""
        path = self.carry_path(chunk_id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.carries)
        return path.name

    def read_carry(self, name: str) -> np.ndarray:
        return np.fromfile(self.carries / Path(name).name, dtype=np.float32)
