"""Where upload bytes and transcription carries live: the interface every node and worker
uses, and the choice between a folder (local or shared) and an S3-compatible object store.

Upload ids come from URLs, so only our own alphabet may reach a path or an object key.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import numpy as np

_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class BadBlobId(ValueError):
    pass


class BlobStoreError(Exception):
    """The configured blob store cannot be used (bad URL, missing bucket, no credentials)."""


class BlobUnavailable(Exception):
    """The bytes asked for are not readable (yet): e.g. an unfinished upload in S3, whose
    parts S3 does not let anyone read before the multipart upload completes."""


class BlobLost(Exception):
    """Bytes the database says were acknowledged are missing from the store."""


def check_upload_id(upload_id: str) -> str:
    if not _ID.match(upload_id):
        raise BadBlobId(upload_id)
    return upload_id


class UploadWriter(Protocol):
    """Appends one PATCH body at a known offset. Nothing it writes counts until `sync`
    returns and the caller commits the new offset; what lies past the committed offset is
    a dead request's leftovers and is dropped or overwritten by the next writer."""

    start: int
    written: int

    async def write(self, *blocks: bytes, more_follows: bool = False) -> None:
        """Append `blocks`, in order (a batch as the network handed it over: not joined).
        `more_follows`: the body goes on, so the store may send these on at once rather than
        keep them for `sync` (a body's last batch goes with its `sync`)."""
        ...

    def digest(self) -> bytes: ...

    async def sync(self, final: bool) -> None:
        """Make everything written durable; `final`: these are the upload's last bytes, so
        also make the whole upload readable (`local_copy`, `stream`)."""
        ...

    async def rollback(self, to_offset: int) -> None: ...

    async def close(self) -> None: ...


class BlobStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raises if the store cannot take bytes now (for /readyz)."""
        ...

    async def create(self, upload_id: str, length: int | None) -> None: ...

    async def open_writer(
        self, upload_id: str, offset: int, checksum_algorithm: str | None = None
    ) -> UploadWriter: ...

    async def concatenate(self, final_id: str, part_ids: list[str]) -> int: ...

    async def delete(self, upload_id: str) -> int:
        """Remove an upload's bytes; returns the bytes reclaimed."""
        ...

    def local_copy(self, upload_id: str) -> AbstractAsyncContextManager[Path]:
        """A file holding a finished upload's bytes, for decoders that want a path."""
        ...

    def stream(self, upload_id: str, length: int) -> AsyncIterator[bytes]:
        """The first `length` bytes of an upload. BlobUnavailable if they cannot be read."""
        ...

    async def write_carry(self, chunk_id: int, samples: np.ndarray) -> str:
        """Durable before the transaction that references it commits; rewritten identically
        if a killed worker's job runs again. Returns the name to read it back by."""
        ...

    async def read_carry(self, name: str) -> np.ndarray: ...

    async def delete_carry(self, name: str) -> None:
        """Once the job that consumed it has committed; a missing carry is no error."""
        ...


def blob_store_for(
    data_dir: Path, blob_url: str | None = None, s3_endpoint_url: str | None = None
) -> BlobStore:
    """`blob_url` None or a folder path: files (a folder all nodes mount to share it).
    `s3://bucket/prefix`: an S3-compatible object store (credentials from the usual AWS
    environment variables or files)."""
    if blob_url and blob_url.startswith("s3://"):
        # Imported only here: aiobotocore costs start-up time that folder setups never need.
        from storage.s3_blobs import S3BlobStore

        bucket, _, prefix = blob_url[len("s3://") :].partition("/")
        if not bucket:
            raise BlobStoreError(f"no bucket in {blob_url!r}")
        return S3BlobStore(bucket, prefix, data_dir / "tmp", endpoint_url=s3_endpoint_url)
    if blob_url and "://" in blob_url and not blob_url.startswith("file://"):
        raise BlobStoreError(f"unsupported blob store {blob_url!r}: a folder or s3://bucket/prefix")
    from storage.local_blobs import LocalBlobStore

    root = Path(blob_url.removeprefix("file://")) if blob_url else data_dir
    return LocalBlobStore(root)


def add_blob_store_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `serve` and `worker`: every node and worker must name the same store."""
    parser.add_argument(
        "--blob-url",
        default=os.environ.get("ROLLSCRIBE_BLOB_URL"),
        help="where upload bytes live: a folder (default: the data folder), or "
        "s3://bucket/prefix for an S3-compatible store",
    )
    parser.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get("ROLLSCRIBE_S3_ENDPOINT_URL"),
        help="S3-compatible endpoint (MinIO, Ceph, ...); default: AWS",
    )
