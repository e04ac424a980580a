"""Blob store in an S3-compatible object store (aiobotocore), shared by every node.

An upload becomes one object, `<prefix>uploads/<id>`. While it is being sent, S3 multipart
upload parts hold its bytes, as in tusd's s3store: part k (1-based) is always bytes
[(k-1)P, kP) for the fixed part size P, so any committed offset X says exactly which parts
are done (X // P of them) and how many bytes of the next part were acknowledged (X % P).
S3 cannot read back the parts of an unfinished multipart upload and refuses parts under
5 MiB but the last, so those X % P acknowledged bytes also live in their own small object,
`<id>.part.<k>`, rewritten at each commit. Bytes past the committed offset (a dead PATCH's
leftovers, in a part or in a `.part` object) are never read: the next writer overwrites
them, and the final CompleteMultipartUpload names only the parts the offset covers.

An upload that ends before its first full part (every live-recording segment) never
starts a multipart upload: its bytes go up in one PutObject at completion.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiofiles
import numpy as np
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from storage.blob_store import BlobLost, BlobStoreError, BlobUnavailable, check_upload_id

PART_SIZE = 8 * 1024 * 1024  # S3's floor is 5 MiB; 8 MiB keeps a 2 GB upload at 256 parts
READ_BLOCK = 1024 * 1024
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


class S3UploadWriter:
    def __init__(
        self,
        store: S3BlobStore,
        upload_id: str,
        offset: int,
        checksum_algorithm: str | None,
    ) -> None:
        self._store = store
        self._id = upload_id
        self.start = offset
        self.written = 0
        self._hash = hashlib.new(checksum_algorithm) if checksum_algorithm else None
        self._part_index = 0  # 0-based index of the part `_buffer` fills
        self._buffer = bytearray()  # that part's bytes, from its first byte
        self._etags: dict[int, str] = {}  # part number (1-based) -> ETag, for the parts done
        self._multipart: str | None = None

    async def load(self, offset: int) -> None:
        """Rebuild the state for a committed `offset` from the store."""
        s = self._store
        index, into_part = divmod(offset, s.part_size)
        self._part_index = index
        self._etags = {}
        self._multipart = None
        if index > 0:
            self._multipart = await s.multipart_id(self._id)
            done = await s.list_parts(self._id, self._multipart) if self._multipart else None
            if done is None or any(
                done.get(n, ("", -1))[1] != s.part_size for n in range(1, index + 1)
            ):
                await self._restart_from_final(offset)
            else:
                self._etags = {n: done[n][0] for n in range(1, index + 1)}
        self._buffer = bytearray()
        if into_part:
            head = await s.read_range(s.partial_key(self._id, index), 0, into_part)
            if head is None or len(head) < into_part:
                # Completed, then its commit failed: the finished object has these bytes.
                head = await s.read_range(s.key(self._id), index * s.part_size, into_part)
            if head is None or len(head) < into_part:
                raise BlobLost(f"upload {self._id}: acknowledged bytes missing at {offset}")
            self._buffer += head

    async def _restart_from_final(self, offset: int) -> None:
        """The multipart upload is gone because the upload was completed, yet the offset
        commit did not happen: start a new multipart upload from the finished object."""
        s = self._store
        size = await s.size(s.key(self._id))
        if size is None or size < offset:
            raise BlobLost(f"upload {self._id}: parts missing below offset {offset}")
        self._multipart = await s.start_multipart(self._id)
        for number in range(1, offset // s.part_size + 1):
            first = (number - 1) * s.part_size
            self._etags[number] = await s.copy_part(
                self._id, self._multipart, number, first, first + s.part_size - 1
            )

    async def write(self, *blocks: bytes, more_follows: bool = False) -> None:
        # Parts go up as they fill, whether or not more follows.
        for data in blocks:
            self._buffer += data
            self.written += len(data)
            if self._hash is not None:
                self._hash.update(data)
        s = self._store
        while len(self._buffer) >= s.part_size:
            await self._put_part(bytes(self._buffer[: s.part_size]))
            del self._buffer[: s.part_size]
            self._part_index += 1

    async def _put_part(self, body: bytes) -> None:
        s = self._store
        if self._multipart is None:
            self._multipart = await s.start_multipart(self._id)
        number = self._part_index + 1
        self._etags[number] = await s.upload_part(self._id, self._multipart, number, body)

    def digest(self) -> bytes:
        assert self._hash is not None
        return self._hash.digest()

    async def sync(self, final: bool) -> None:
        s = self._store
        if not final:
            if self._buffer:
                await s.put(s.partial_key(self._id, self._part_index), bytes(self._buffer))
            return
        if self._multipart is None:
            await s.put(s.key(self._id), bytes(self._buffer))
        else:
            if self._buffer or not self._etags:
                await self._put_part(bytes(self._buffer))
            last = max(self._etags)
            await s.complete_multipart(
                self._id, self._multipart, [(n, self._etags[n]) for n in range(1, last + 1)]
            )
        await s.delete_keys(await s.side_keys(self._id))

    async def rollback(self, to_offset: int) -> None:
        if to_offset // self._store.part_size == self._part_index and self._buffer:
            del self._buffer[to_offset % self._store.part_size :]
        else:
            await self.load(to_offset)
        self.written = to_offset - self.start

    async def close(self) -> None:
        self._buffer = bytearray()


class S3BlobStore:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        tmp_dir: Path,
        *,
        endpoint_url: str | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.tmp_dir = tmp_dir
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self._exit = AsyncExitStack()
        self._client: Any = None
        self._multiparts: dict[str, str] = {}

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.tmp_dir.mkdir, parents=True, exist_ok=True)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self._client = await self._exit.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=region or "us-east-1",
                config=AioConfig(
                    max_pool_connections=64,
                    retries={"mode": "standard"},
                    # botocore's default CRC trailers on every PUT are refused by several
                    # S3-compatible stores; they are sent only where S3 requires them.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        )
        # Fail at start, with S3's own words, rather than at the first upload.
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            await self.close()
            where = self.endpoint_url or "AWS"
            raise BlobStoreError(f"cannot use bucket {self.bucket!r} at {where}: {exc}") from None

    async def close(self) -> None:
        await self._exit.aclose()
        self._client = None

    async def ping(self) -> None:
        await self._client.head_bucket(Bucket=self.bucket)

    # ---- keys and small S3 calls ----------------------------------------------------------

    def key(self, upload_id: str) -> str:
        return f"{self.prefix}uploads/{check_upload_id(upload_id)}"

    def partial_key(self, upload_id: str, index: int) -> str:
        return f"{self.key(upload_id)}.part.{index}"

    def _multipart_key(self, upload_id: str) -> str:
        return f"{self.key(upload_id)}.multipart"

    async def put(self, key: str, body: bytes) -> None:
        await self._client.put_object(Bucket=self.bucket, Key=key, Body=body)

    async def read_range(self, key: str, first: int, length: int) -> bytes | None:
        try:
            answer = await self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={first}-{first + length - 1}"
            )
        except ClientError as exc:
            if _missing(exc) or exc.response["Error"]["Code"] == "InvalidRange":
                return None
            raise
        async with answer["Body"] as body:
            return bytes(await body.read())

    async def size(self, key: str) -> int | None:
        try:
            answer = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return int(answer["ContentLength"])

    async def side_keys(self, upload_id: str) -> list[str]:
        """The `.part.<k>` and `.multipart` objects of an upload."""
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key(upload_id) + "."):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    async def delete_keys(self, keys: list[str]) -> None:
        for first in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[first : first + 1000]]
            await self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    # ---- multipart -----------------------------------------------------------------------

    async def multipart_id(self, upload_id: str) -> str | None:
        known = self._multiparts.get(upload_id)
        if known is None:
            raw = await self.read_range(self._multipart_key(upload_id), 0, 1024)
            if raw:
                known = self._multiparts[upload_id] = raw.decode()
        return known

    async def start_multipart(self, upload_id: str) -> str:
        # A dead request's multipart upload is reused (its parts get overwritten), so that
        # retries do not leave unfinished multipart uploads behind in the bucket.
        known = await self.multipart_id(upload_id)
        if known is not None and await self.list_parts(upload_id, known) is not None:
            self._multiparts[upload_id] = known
            return known
        answer = await self._client.create_multipart_upload(
            Bucket=self.bucket, Key=self.key(upload_id)
        )
        multipart: str = answer["UploadId"]
        # Durable before any part: another node resuming this upload must find it.
        await self.put(self._multipart_key(upload_id), multipart.encode())
        self._multiparts[upload_id] = multipart
        return multipart

    async def list_parts(self, upload_id: str, multipart: str) -> dict[int, tuple[str, int]] | None:
        """Part number -> (ETag, size); None if the multipart upload no longer exists."""
        parts: dict[int, tuple[str, int]] = {}
        paginator = self._client.get_paginator("list_parts")
        try:
            async for page in paginator.paginate(
                Bucket=self.bucket, Key=self.key(upload_id), UploadId=multipart
            ):
                for part in page.get("Parts", []):
                    parts[int(part["PartNumber"])] = (part["ETag"], int(part["Size"]))
        except ClientError as exc:
            if _missing(exc):
                self._multiparts.pop(upload_id, None)
                return None
            raise
        return parts

    async def upload_part(self, upload_id: str, multipart: str, number: int, body: bytes) -> str:
        answer = await self._client.upload_part(
            Bucket=self.bucket,
            Key=self.key(upload_id),
            UploadId=multipart,
            PartNumber=number,
            Body=body,
        )
        return str(answer["ETag"])

    async def copy_part(
        self, upload_id: str, multipart: str, number: int, first: int, last: int
    ) -> str:
        key = self.key(upload_id)
        answer = await self._client.upload_part_copy(
            Bucket=self.bucket,
            Key=key,
            UploadId=multipart,
            PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": key},
            CopySourceRange=f"bytes={first}-{last}",
        )
        return str(answer["CopyPartResult"]["ETag"])

    async def complete_multipart(
        self, upload_id: str, multipart: str, parts: list[tuple[int, str]]
    ) -> None:
        await self._client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key(upload_id),
            UploadId=multipart,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
        )
        self._multiparts.pop(upload_id, None)

    # ---- the BlobStore interface ----------------------------------------------------------

    async def create(self, upload_id: str, length: int | None) -> None:
        check_upload_id(upload_id)
        if length == 0:
            await self.put(self.key(upload_id), b"")

    async def open_writer(
        self, upload_id: str, offset: int, checksum_algorithm: str | None = None
    ) -> S3UploadWriter:
        writer = S3UploadWriter(self, check_upload_id(upload_id), offset, checksum_algorithm)
        await writer.load(offset)
        return writer

    async def concatenate(self, final_id: str, part_ids: list[str]) -> int:
        writer = await self.open_writer(final_id, 0)
        for part in part_ids:
            async for data in self._read(self.key(part)):
                await writer.write(data)
        await writer.sync(final=True)
        await writer.close()
        return writer.written

    async def delete(self, upload_id: str) -> int:
        multipart = await self.multipart_id(upload_id)
        if multipart is not None:
            try:
                await self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key(upload_id), UploadId=multipart
                )
            except ClientError as exc:
                if not _missing(exc):
                    raise
            self._multiparts.pop(upload_id, None)
        size = await self.size(self.key(upload_id)) or 0
        await self.delete_keys([self.key(upload_id), *await self.side_keys(upload_id)])
        return size

    async def _read(self, key: str, length: int | None = None) -> AsyncIterator[bytes]:
        args: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if length is not None:
            if length == 0:
                return
            args["Range"] = f"bytes=0-{length - 1}"
        try:
            answer = await self._client.get_object(**args)
        except ClientError as exc:
            if _missing(exc):
                raise BlobUnavailable(f"{key}: no such object (unfinished or lost)") from None
            if exc.response["Error"]["Code"] == "InvalidRange":
                return  # S3's answer to any range of an empty object
            raise
        async with answer["Body"] as body:
            while data := await body.read(READ_BLOCK):
                yield bytes(data)

    def stream(self, upload_id: str, length: int) -> AsyncIterator[bytes]:
        return self._read(self.key(upload_id), length)

    def _temp_file(self, upload_id: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=f"{upload_id}.")
        os.close(fd)
        return Path(name)

    @asynccontextmanager
    async def local_copy(self, upload_id: str) -> AsyncIterator[Path]:
        path = await asyncio.to_thread(self._temp_file, check_upload_id(upload_id))
        try:
            async with aiofiles.open(path, "wb") as out:
                async for data in self._read(self.key(upload_id)):
                    await out.write(data)
            yield path
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    def _carry_key(self, name: str) -> str:
        return f"{self.prefix}carry/{Path(name).name}"

    async def write_carry(self, chunk_id: int, samples: np.ndarray) -> str:
        name = f"{int(chunk_id)}.f32"
        body = np.ascontiguousarray(samples, dtype=np.float32).tobytes()
        await self.put(self._carry_key(name), body)
        return name

    async def delete_carry(self, name: str) -> None:
        await self.delete_keys([self._carry_key(name)])

    async def read_carry(self, name: str) -> np.ndarray:
        body = b"".join([data async for data in self._read(self._carry_key(name))])
        return np.frombuffer(body, dtype=np.float32)
