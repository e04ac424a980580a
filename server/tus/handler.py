"""The tus 1.0.0 server: core protocol plus creation, creation-with-upload,
creation-defer-length, termination, checksum, expiration and concatenation.

Bodies stream to the blob store; an offset is committed to the database only after its
bytes are durable there (fsynced, or stored in S3), so whatever HEAD answers is intact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import web

from server.auth import OWNER
from server.body_rate import MinimumRate
from server.errors import TUS_VERSION, ApiError, Errors
from server.key_limits import LIMITS, UploadQuota
from server.tus.headers import (
    CHECKSUM_ALGORITHMS,
    Checksum,
    encode_metadata,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_non_negative,
)
from storage.blob_store import (
    BadBlobId,
    BlobLost,
    BlobStore,
    BlobUnavailable,
    UploadWriter,
    check_upload_id,
)
from storage.models import Upload
from storage.storage_full import storage_full
from storage.upload_locks import UploadLocks
from storage.upload_store import UploadStore, make_upload, new_upload_id

log = logging.getLogger(__name__)

OCTET = "application/offset+octet-stream"
EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,termination,checksum,"
    "expiration,concatenation"
)
# What an upload's URL answers (405's Allow); POST only with X-HTTP-Method-Override.
UPLOAD_METHODS = "OPTIONS, HEAD, GET, PATCH, DELETE, POST"
READ_BLOCK = 256 * 1024
WRITE_BATCH = 1024 * 1024


@dataclass(frozen=True)
class TusSettings:
    max_size: int = 8 * 1024**3
    metadata_max_bytes: int = 4096
    expiry_s: float = 24 * 3600.0
    read_timeout_s: float = 30.0
    # A body slower than this on average over 10 s is ended (what arrived is kept).
    min_body_rate: float = 500.0
    # fsync + commit the offset at least this often during a long PATCH without checksum
    checkpoint_bytes: int = 8 * 1024 * 1024
    # A PATCH that received nothing for this long is stalled: it commits what arrived (so
    # HEAD is exact) and a new PATCH may take the upload over. Below it, a writer is live
    # and a second PATCH is refused with 423.
    stall_s: float = 2.0
    takeover_wait_s: float = 5.0


MAX_CONCAT_PARTS = 1000


@dataclass
class UploadSlot:
    """Who writes an upload now: two PATCHes never interleave."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_byte_at: float = 0.0
    acquired_at: float = 0.0  # wall clock: compared with a takeover stamped by another node
    takeover: asyncio.Event = field(default_factory=asyncio.Event)
    users: int = 0  # requests holding or waiting for the lock; the slot goes when none do


class UploadMoved(ApiError):
    """Someone else advanced this upload: the bytes past our last commit are theirs now, so
    this request must leave the file alone (no rollback) and stop."""


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


class TusHandler:
    def __init__(
        self,
        uploads: UploadStore,
        blobs: BlobStore,
        settings: TusSettings,
        locks: UploadLocks,
        on_bytes: Callable[[int], None] | None = None,
        quota: UploadQuota | None = None,
    ) -> None:
        self.on_bytes = on_bytes
        self.quota = quota
        self.locks = locks
        self.blobs = blobs
        self.uploads = uploads
        self.settings = settings
        self._slots: dict[str, UploadSlot] = {}

    def routes(self, prefix: str = "/files") -> list[web.RouteDef]:
        return [
            web.options(prefix + "/", self.options),
            web.options(prefix + "/{upload_id}", self.options),
            web.post(prefix + "/", self.create),
            web.post(prefix, self.create),
            web.head(prefix + "/{upload_id}", self.head),
            web.get(prefix + "/{upload_id}", self.download, allow_head=False),
            web.patch(prefix + "/{upload_id}", self.patch),
            web.delete(prefix + "/{upload_id}", self.delete),
            # X-HTTP-Method-Override, for clients behind proxies that drop PATCH/DELETE.
            web.post(prefix + "/{upload_id}", self.method_override),
        ]

    # ---- helpers -------------------------------------------------------------------------

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION, **extra}

    @staticmethod
    def _check_version(request: web.Request) -> None:
        if request.headers.get("Tus-Resumable") != TUS_VERSION:
            got = request.headers.get("Tus-Resumable")
            raise ApiError(Errors.UNSUPPORTED_VERSION, f"got {got!r}")

    def _location(self, request: web.Request, upload_id: str) -> str:
        base = request.path if request.path.endswith("/") else request.path + "/"
        if request.match_info.get("upload_id"):
            base = request.path.rsplit("/", 1)[0] + "/"
        return f"{request.scheme}://{request.host}{base}{upload_id}"

    @staticmethod
    def _check_id(upload_id: str) -> None:
        try:
            check_upload_id(upload_id)
        except BadBlobId:
            raise ApiError(Errors.NOT_FOUND, "malformed upload id") from None

    async def _bytes_left(self, request: web.Request) -> int | None:
        """Upload bytes the request's key may still send today; None: no limit."""
        if self.quota is None:
            return None
        return await self.quota.bytes_left(request[OWNER], request[LIMITS])

    def _check_quota(self, request: web.Request, left: int | None, wanted: int) -> None:
        if left is not None and wanted > left:
            assert self.quota is not None
            raise self.quota.refuse(request[LIMITS], left, wanted)

    async def _load(self, upload_id: str, owner: str) -> Upload:
        self._check_id(upload_id)
        upload = await self.uploads.get(upload_id)
        if upload is None or upload.owner != owner:
            raise ApiError(Errors.NOT_FOUND, upload_id)
        if upload.terminated_at is not None:
            raise ApiError(Errors.GONE, "terminated")
        if self._expired(upload):
            raise ApiError(Errors.GONE, "expired")
        return upload

    @staticmethod
    def _complete(upload: Upload) -> bool:
        return upload.length is not None and upload.offset == upload.length

    def _expired(self, upload: Upload) -> bool:
        return (
            not self._complete(upload)
            and upload.expires_at is not None
            and upload.expires_at < time.time()
        )

    def _expires_header(self, upload: Upload) -> dict[str, str]:
        if upload.expires_at is None or self._complete(upload) or upload.concat == "final":
            return {}
        return {"Upload-Expires": _http_date(upload.expires_at)}

    @asynccontextmanager
    async def _locked(self, upload_id: str) -> AsyncIterator[UploadSlot]:
        """Hold the upload's lock (this node's, then the one across nodes). The slot lives
        only while a request holds or waits for it, so a long-running server does not keep
        one per upload it ever saw (nor per made-up id)."""
        slot = self._slots.get(upload_id)
        if slot is None:
            slot = self._slots[upload_id] = UploadSlot()
        slot.users += 1
        try:
            await self._acquire(upload_id, slot)
            try:
                yield slot
            finally:
                await self._release(upload_id, slot)
        finally:
            slot.users -= 1
            if slot.users == 0 and self._slots.get(upload_id) is slot:
                del self._slots[upload_id]

    async def _acquire(self, upload_id: str, slot: UploadSlot) -> None:
        """This node's lock, then the lock that holds across nodes."""
        if slot.lock.locked():
            if time.monotonic() - slot.last_byte_at < self.settings.stall_s:
                raise ApiError(Errors.UPLOAD_LOCKED)
            # The holder is stalled (a dead client's socket): ask it to stop, as tusd does.
            slot.takeover.set()
            try:
                # asyncio.timeout: wait_for (3.11) can drop a cancellation that arrives as
                # the lock is acquired (storage/event_feed.py).
                async with asyncio.timeout(self.settings.takeover_wait_s):
                    await slot.lock.acquire()
            except TimeoutError:
                raise ApiError(Errors.UPLOAD_LOCKED) from None
        else:
            await slot.lock.acquire()
        try:
            await self._lock_across_nodes(upload_id)
        except BaseException:
            slot.lock.release()
            raise
        slot.takeover = asyncio.Event()
        slot.last_byte_at = time.monotonic()
        slot.acquired_at = time.time()

    async def _lock_across_nodes(self, upload_id: str) -> None:
        if await self.locks.try_lock(upload_id):
            return
        # Another node is writing it. If that writer's client stalled, it stops when it sees
        # the request (within `stall_s`); a live writer keeps the upload and we answer 423.
        await self.locks.request_takeover(upload_id)
        deadline = time.monotonic() + self.settings.takeover_wait_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if await self.locks.try_lock(upload_id):
                return
        raise ApiError(Errors.UPLOAD_LOCKED, "another server node is writing this upload")

    async def _release(self, upload_id: str, slot: UploadSlot) -> None:
        try:
            await asyncio.shield(self.locks.unlock(upload_id))
        finally:
            slot.lock.release()

    async def _taken_over(self, upload_id: str, slot: UploadSlot) -> bool:
        return slot.takeover.is_set() or await self.locks.takeover_requested(
            upload_id, slot.acquired_at, self.settings.takeover_wait_s + self.settings.stall_s
        )

    # ---- OPTIONS -------------------------------------------------------------------------

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(
            status=200,
            headers=self._headers(
                **{
                    "Tus-Version": TUS_VERSION,
                    "Tus-Extension": EXTENSIONS,
                    "Tus-Max-Size": str(self.settings.max_size),
                    "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
                }
            ),
        )

    # ---- POST (creation) -----------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        self._check_version(request)
        concat = parse_concat(request.headers.get("Upload-Concat"))
        length_header = request.headers.get("Upload-Length")
        defer_header = request.headers.get("Upload-Defer-Length")
        meta = parse_metadata(
            request.headers.get("Upload-Metadata"), self.settings.metadata_max_bytes
        )
        has_body = (request.content_length or 0) > 0 or (
            request.content_length is None
            and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        )
        if has_body and request.content_type != OCTET:
            raise ApiError(
                Errors.INVALID_CONTENT_TYPE, f"creation body is {request.content_type!r}"
            )

        if concat is not None and concat.kind == "final":
            if length_header is not None or defer_header is not None:
                raise ApiError(Errors.INVALID_CONCAT, "a final upload must not carry Upload-Length")
            if has_body:
                raise ApiError(Errors.MODIFY_FINAL, "a final upload takes no body")
            return await self._create_final(request, concat.parts, meta)

        if length_header is not None and defer_header is not None:
            raise ApiError(Errors.LENGTH_AND_DEFER)
        length = parse_non_negative(length_header, Errors.INVALID_LENGTH)
        if length is None:
            if defer_header is None:
                raise ApiError(Errors.MISSING_LENGTH)
            if defer_header.strip() != "1":
                raise ApiError(Errors.INVALID_DEFER, f"got {defer_header[:20]!r}")
        elif length > self.settings.max_size:
            raise ApiError(Errors.MAX_SIZE_EXCEEDED, f"{length} > {self.settings.max_size}")

        # Parsed before anything is created: a bad header must not leave an orphan upload.
        checksum = parse_checksum(request.headers.get("Upload-Checksum")) if has_body else None
        # A declared length (or body) must fit in what the key may still send today, before
        # the upload exists; a deferred one is checked as its bytes come.
        left = await self._bytes_left(request)
        self._check_quota(request, left, max(length or 0, request.content_length or 0))
        if has_body:  # nor a body that says up front it will not fit
            self._check_declared(
                request.content_length,
                length if length is not None else self.settings.max_size,
                length_known=length is not None,
                offset=0,
            )
        upload_id = new_upload_id()
        upload = make_upload(
            upload_id=upload_id,
            length=length,
            meta=meta,
            concat="partial" if concat is not None else None,
            concat_parts=None,
            expires_at=time.time() + self.settings.expiry_s,
            owner=request[OWNER],
        )
        existing = await self.uploads.create(upload)
        if existing is not None:
            return await self._answer_existing(request, existing)
        status_headers: dict[str, str] = {}
        if has_body:
            try:
                async with self._locked(upload.id) as slot:
                    upload = await self._write_body(request, upload, checksum, slot, left)
            except ApiError as exc:
                # The upload was created before its body failed (a checksum mismatch, a
                # stall, a chunked body too long): the refusal says where it is and how much
                # of it is stored, so the client can resume it rather than leave it orphaned.
                exc.headers.update(
                    {
                        "Location": self._location(request, upload_id),
                        "Upload-Offset": str(upload.offset),
                    }
                )
                raise
            status_headers["Upload-Offset"] = str(upload.offset)
        elif length == 0:
            await self.uploads.finish(upload)
        return web.Response(
            status=201,
            headers=self._headers(
                Location=self._location(request, upload_id),
                **status_headers,
                **self._expires_header(upload),
            ),
        )

    async def _answer_existing(self, request: web.Request, upload: Upload) -> web.Response:
        return web.Response(
            status=201,
            headers=self._headers(
                Location=self._location(request, upload.id),
                **{"Upload-Offset": str(upload.offset)},
                **self._expires_header(upload),
            ),
        )

    async def _create_final(
        self, request: web.Request, part_ids: list[str], meta: dict[str, str | None]
    ) -> web.Response:
        owner = request[OWNER]
        # Naming one partial many times would make a final of any size out of one upload's
        # bytes (a 30 MB part 272 times: 8 GiB written for 30 MB sent).
        repeated = sorted(p for p, n in Counter(part_ids).items() if n > 1)
        if repeated:
            raise ApiError(
                Errors.INVALID_CONCAT,
                f"each partial upload may appear once; repeated: {repeated[:3]}",
            )
        if len(part_ids) > MAX_CONCAT_PARTS:
            raise ApiError(Errors.INVALID_CONCAT, f"at most {MAX_CONCAT_PARTS} partial uploads")
        parts: list[Upload] = []
        for part_id in part_ids:
            try:
                part = await self._load(part_id, owner)
            except ApiError as exc:
                raise ApiError(
                    Errors.INVALID_CONCAT, f"partial upload {part_id}: {exc.message}"
                ) from None
            if part.concat != "partial":
                raise ApiError(Errors.INVALID_CONCAT, f"{part_id} is not a partial upload")
            if not self._complete(part):
                raise ApiError(Errors.CONCAT_PART_UNFINISHED, part_id)
            parts.append(part)
        length = sum(p.length or 0 for p in parts)
        if length > self.settings.max_size:
            raise ApiError(Errors.MAX_SIZE_EXCEEDED, f"{length} > {self.settings.max_size}")
        upload = make_upload(
            upload_id=new_upload_id(),
            length=length,
            meta=meta,
            concat="final",
            concat_parts=part_ids,
            # Kept while a meeting keeps it as a chunk; otherwise it expires as any upload.
            expires_at=time.time() + self.settings.expiry_s,
            owner=owner,
        )
        existing = await self.uploads.concatenate(upload, part_ids)
        if existing is not None:
            return await self._answer_existing(request, existing)
        return web.Response(
            status=201, headers=self._headers(Location=self._location(request, upload.id))
        )

    # ---- HEAD ----------------------------------------------------------------------------

    async def head(self, request: web.Request) -> web.Response:
        self._check_version(request)
        upload = await self._load(request.match_info["upload_id"], request[OWNER])
        headers = self._headers(**{"Cache-Control": "no-store"}, **self._expires_header(upload))
        headers["Upload-Offset"] = str(upload.offset)
        if upload.length is None:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(upload.length)
        if upload.meta:
            headers["Upload-Metadata"] = encode_metadata(upload.meta)
        if upload.concat == "partial":
            headers["Upload-Concat"] = "partial"
        elif upload.concat == "final":
            prefix = request.path.rsplit("/", 1)[0]
            headers["Upload-Concat"] = "final;" + " ".join(
                f"{prefix}/{p}" for p in upload.concat_parts or []
            )
        return web.Response(status=200, headers=headers)

    # ---- GET (download, as tusd) ---------------------------------------------------------

    async def download(self, request: web.Request) -> web.StreamResponse:
        self._check_version(request)
        upload = await self._load(request.match_info["upload_id"], request[OWNER])
        response = web.StreamResponse(
            status=200,
            headers=self._headers(
                **{
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(upload.offset),
                    "Content-Disposition": "attachment",
                }
            ),
        )
        stream = self.blobs.stream(upload.id, upload.offset)
        try:
            # Before the headers go: an unreadable upload is still a clean error answer.
            first = await anext(stream, b"")
        except BlobUnavailable as exc:
            raise ApiError(Errors.DOWNLOAD_INCOMPLETE, str(exc)) from None
        await response.prepare(request)
        if first:
            await response.write(first)
        async for data in stream:
            await response.write(data)
        await response.write_eof()
        return response

    # ---- PATCH ---------------------------------------------------------------------------

    async def method_override(self, request: web.Request) -> web.StreamResponse:
        method = request.headers.get("X-HTTP-Method-Override", "").upper()
        if method == "PATCH":
            return await self.patch(request)
        if method == "DELETE":
            return await self.delete(request)
        if method == "HEAD":
            return await self.head(request)
        raise ApiError(
            Errors.METHOD_NOT_ALLOWED,
            "POST on an upload needs X-HTTP-Method-Override: PATCH, DELETE or HEAD",
            {"Allow": UPLOAD_METHODS},
        )

    async def patch(self, request: web.Request) -> web.Response:
        self._check_version(request)
        if request.content_type != OCTET:
            raise ApiError(Errors.INVALID_CONTENT_TYPE, f"got {request.content_type!r}")
        upload_id = request.match_info["upload_id"]
        offset = parse_non_negative(request.headers.get("Upload-Offset"), Errors.INVALID_OFFSET)
        if offset is None:
            raise ApiError(Errors.INVALID_OFFSET, "Upload-Offset is missing")
        checksum = parse_checksum(request.headers.get("Upload-Checksum"))
        new_length = parse_non_negative(request.headers.get("Upload-Length"), Errors.INVALID_LENGTH)
        self._check_id(upload_id)  # a made-up 8,000-character id takes no lock slot
        async with self._locked(upload_id) as slot:
            upload = await self._load(upload_id, request[OWNER])  # fresh, under the lock
            if upload.concat == "final":
                raise ApiError(Errors.MODIFY_FINAL)
            if offset != upload.offset:
                raise ApiError(
                    Errors.MISMATCHED_OFFSET,
                    f"request says {offset}, upload is at {upload.offset}",
                    {"Upload-Offset": str(upload.offset)},
                )
            # Before the length is declared or a byte is read: a refused PATCH changes nothing.
            left = await self._bytes_left(request)
            declared_rest = new_length - upload.offset if new_length is not None else 0
            self._check_quota(request, left, max(request.content_length or 0, declared_rest))
            if new_length is not None:
                await self._declare_length(upload, new_length)
            upload = await self._write_body(request, upload, checksum, slot, left)
        return web.Response(
            status=204,
            headers=self._headers(
                **{"Upload-Offset": str(upload.offset)}, **self._expires_header(upload)
            ),
        )

    async def _declare_length(self, upload: Upload, length: int) -> None:
        if upload.length is not None:
            if upload.length != length:
                raise ApiError(
                    Errors.LENGTH_ALREADY_SET, f"it is {upload.length}, request says {length}"
                )
            return
        if length > self.settings.max_size:
            raise ApiError(Errors.MAX_SIZE_EXCEEDED, f"{length} > {self.settings.max_size}")
        if length < upload.offset:
            raise ApiError(
                Errors.INVALID_LENGTH, f"{length} is less than the {upload.offset} bytes stored"
            )
        # Complete by the declaration alone: no byte follows, so no last commit will make
        # the bytes whole in their store (it completes an S3 multipart upload) or record
        # the completion (what it means to a meeting): both are done here, the bytes before
        # the length is recorded (bytes lost: nothing recorded), the completion after, as
        # for an upload created complete.
        complete = length == upload.offset
        if complete and length > 0:
            try:
                writer = await self.blobs.open_writer(upload.id, upload.offset)
                try:
                    await writer.sync(final=True)
                finally:
                    await writer.close()
            except BlobLost as exc:
                raise self._bytes_lost(upload, exc) from None
        if not await self.uploads.declare_length(upload.id, length):
            raise ApiError(Errors.LENGTH_ALREADY_SET)
        upload.length = length
        if complete:
            await self.uploads.finish(upload)

    @staticmethod
    def _check_declared(
        declared: int | None, room: int, *, length_known: bool, offset: int
    ) -> None:
        """A body whose Content-Length says it will not fit is refused before it is read."""
        if declared is not None and declared > room:
            raise ApiError(
                Errors.BEYOND_LENGTH if length_known else Errors.MAX_SIZE_EXCEEDED,
                f"{declared} bytes at offset {offset}, room for {room}",
            )

    def _room(self, upload: Upload) -> int:
        limit = upload.length if upload.length is not None else self.settings.max_size
        return limit - upload.offset

    async def _next_block(self, request: web.Request, slot: UploadSlot) -> bytes | None:
        """The next body block; None if the body stalled (no byte for `stall_s`) or a newer
        PATCH asked to take over."""
        try:
            # Bytes already buffered: no waiting, so no tasks to race against a takeover.
            buffered = request.content.read_nowait(READ_BLOCK)
        except RuntimeError:  # another reader waits; cannot happen with our one reader
            buffered = b""
        if buffered:
            slot.last_byte_at = time.monotonic()
            return buffered
        if request.content.at_eof():
            return b""
        read = asyncio.ensure_future(request.content.read(READ_BLOCK))
        stop = asyncio.ensure_future(slot.takeover.wait())
        try:
            await asyncio.wait(
                {read, stop}, timeout=self.settings.stall_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
        if not read.done():
            read.cancel()
            return None
        slot.last_byte_at = time.monotonic()
        return read.result()

    async def _write_body(
        self,
        request: web.Request,
        upload: Upload,
        checksum: Checksum | None,
        slot: UploadSlot,
        quota_left: int | None = None,
    ) -> Upload:
        room = self._room(upload)
        self._check_declared(
            request.content_length,
            room,
            length_known=upload.length is not None,
            offset=upload.offset,
        )
        try:
            writer = await self.blobs.open_writer(
                upload.id, upload.offset, checksum.algorithm if checksum else None
            )
        except BlobLost as exc:
            raise self._bytes_lost(upload, exc) from None
        committed = upload.offset
        stalled: ApiError | None = None
        # The blocks read since the last batch went to the store, kept as they came: joining
        # them would copy every byte of a large PATCH once more on the loop.
        pending: list[bytes] = []
        pending_bytes = 0

        async def flush_pending(more_follows: bool = False) -> None:
            # One blob store call (a thread hop, or an S3 part) per MiB, not per network read.
            nonlocal pending_bytes
            if pending:
                await writer.write(*pending, more_follows=more_follows)
                pending.clear()
                pending_bytes = 0

        try:
            idle_since = time.monotonic()
            rate = MinimumRate(self.settings.min_body_rate, started_at=idle_since)
            while True:
                data = await self._next_block(request, slot)
                if rate.too_slow(len(data or b""), time.monotonic()):
                    await flush_pending()
                    stalled = ApiError(Errors.BODY_TOO_SLOW, rate.describe())
                    break
                if data is None:
                    await flush_pending()
                    if await self._taken_over(upload.id, slot):
                        stalled = ApiError(Errors.UPLOAD_TAKEN_OVER)
                        break
                    if checksum is None:
                        # Make what arrived durable now, so HEAD answers it at once.
                        committed = await self._commit(writer, upload, committed)
                    if time.monotonic() - idle_since >= self.settings.read_timeout_s:
                        stalled = ApiError(
                            Errors.READ_TIMEOUT, f"no byte for {self.settings.read_timeout_s:g}s"
                        )
                        break
                    continue
                idle_since = time.monotonic()
                if not data:
                    await flush_pending()
                    break
                sent = writer.start + writer.written - upload.offset
                body_bytes = sent + pending_bytes + len(data)
                if body_bytes > room:
                    raise ApiError(Errors.BEYOND_LENGTH, f"body longer than the {room} bytes left")
                # The caller checked a declared Content-Length; a body of unknown length
                # (chunked) is refused where it passes the key's daily bytes, and what it sent
                # since its last checkpoint is cut, as for any refused body.
                self._check_quota(request, quota_left, body_bytes)
                pending.append(data)
                pending_bytes += len(data)
                if pending_bytes < WRITE_BATCH or body_bytes == request.content_length:
                    # A batch that ends the declared body goes with the commit's fsync (one
                    # hop for both), as a body shorter than a batch does.
                    continue
                await flush_pending(more_follows=True)
                if (
                    checksum is None
                    and writer.start + writer.written - committed >= self.settings.checkpoint_bytes
                ):
                    committed = await self._commit(writer, upload, committed)
            if checksum is not None and (stalled is not None or writer.digest() != checksum.digest):
                if stalled is None:
                    stalled = ApiError(Errors.CHECKSUM_MISMATCH, f"{checksum.algorithm} differs")
                await writer.rollback(committed)
            else:
                committed = await self._commit(writer, upload, committed)
        except UploadMoved:
            await writer.close()
            raise
        except BlobLost as exc:
            # A store may open the upload's bytes at its first write (the folder store
            # does): nothing of this request reached them.
            await writer.close()
            raise self._bytes_lost(upload, exc) from None
        except ApiError:
            await writer.rollback(committed)
            await writer.close()
            raise
        except BaseException as exc:
            if storage_full(exc):
                # The disk is full: what this request wrote past its last commit is cut, so
                # its space is free again, and the client hears 507 with the offset kept.
                await asyncio.shield(self._drop_uncommitted(writer, committed))
                raise
            # The client went away mid-body (reset, payload error, cancellation): keep what
            # arrived, as tus asks, unless it was to be verified against a checksum.
            await asyncio.shield(
                self._keep_partial(writer, upload, committed, checksum, list(pending))
            )
            raise
        await writer.close()
        if stalled is not None:
            raise stalled
        return upload

    @staticmethod
    def _bytes_lost(upload: Upload, lost: BlobLost) -> ApiError:
        log.error("upload %s: %s", upload.id, lost)
        return ApiError(Errors.UPLOAD_BYTES_LOST, str(lost))

    @staticmethod
    async def _drop_uncommitted(writer: UploadWriter, committed: int) -> None:
        try:
            await writer.rollback(committed)
        finally:
            await writer.close()

    async def _keep_partial(
        self,
        writer: UploadWriter,
        upload: Upload,
        committed: int,
        checksum: Checksum | None,
        pending: list[bytes],
    ) -> None:
        try:
            if checksum is not None:
                await writer.rollback(committed)
            else:
                if pending:
                    await writer.write(*pending)
                await self._commit(writer, upload, committed)
        except BlobLost as exc:
            # The client is gone, so is the upload's file: nothing to keep; said in the log
            # (the request's own error, the client's going away, is what propagates).
            self._bytes_lost(upload, exc)
        finally:
            await writer.close()

    async def _commit(self, writer: UploadWriter, upload: Upload, committed: int) -> int:
        """fsync, then record the new offset: the order that makes HEAD's answer durable.
        The last bytes' commit also records the upload's completion, in one transaction."""
        new_offset = writer.start + writer.written
        if new_offset == committed:
            return committed
        if not self.locks.holds(upload.id):
            # The cross-node lock's session dropped: another node may be writing now.
            raise UploadMoved(Errors.UPLOAD_TAKEN_OVER, "this node lost the upload's lock")
        await writer.sync(final=upload.length is not None and new_offset == upload.length)
        expires_at = time.time() + self.settings.expiry_s
        if not await self.uploads.commit_offset(upload, committed, new_offset, expires_at):
            raise UploadMoved(Errors.MISMATCHED_OFFSET, "the upload moved under this request")
        if self.on_bytes is not None:
            self.on_bytes(new_offset - committed)
        return new_offset

    # ---- DELETE (termination) ------------------------------------------------------------

    async def delete(self, request: web.Request) -> web.Response:
        self._check_version(request)
        upload_id = request.match_info["upload_id"]
        upload = await self._load(upload_id, request[OWNER])
        async with self._locked(upload_id):
            await self.uploads.terminate(upload)
        return web.Response(status=204, headers=self._headers())
