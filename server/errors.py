"""One table of named API errors (as tusd does): handlers raise them, one middleware renders them.

Every error body is JSON: {"error": {"code": ..., "message": ...}}. Protocol errors carry
the tus headers too, so a tus client can always tell which version the server speaks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from storage.refusals import Refused, Rule
from storage.storage_full import storage_full
from storage.store_outage import BLOB_STORE, DATABASE, unavailable_store

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
# Seconds a client is asked to wait when the database or the blob store cannot serve: long
# enough not to add to a burst, short enough that a restart of either is not noticed.
UNAVAILABLE_RETRY_AFTER_S = 2
# When the server's disk is full: space comes back when someone makes it, not in a moment.
STORAGE_FULL_RETRY_AFTER_S = 60


@dataclass(frozen=True)
class ErrorKind:
    code: str
    status: int
    message: str


class ApiError(Exception):
    def __init__(
        self, kind: ErrorKind, detail: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail or kind.message)
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}

    @property
    def message(self) -> str:
        return f"{self.kind.message}: {self.detail}" if self.detail else self.kind.message


def _e(code: str, status: int, message: str) -> ErrorKind:
    return ErrorKind(code, status, message)


class Errors:
    # tus protocol
    UNSUPPORTED_VERSION = _e("ERR_UNSUPPORTED_VERSION", 412, "Tus-Resumable must be 1.0.0")
    INVALID_CONTENT_TYPE = _e(
        "ERR_INVALID_CONTENT_TYPE", 415, "Content-Type must be application/offset+octet-stream"
    )
    INVALID_OFFSET = _e("ERR_INVALID_OFFSET", 400, "Upload-Offset must be a non-negative integer")
    MISMATCHED_OFFSET = _e(
        "ERR_MISMATCHED_OFFSET", 409, "Upload-Offset does not match the upload's offset"
    )
    INVALID_LENGTH = _e("ERR_INVALID_LENGTH", 400, "Upload-Length must be a non-negative integer")
    LENGTH_AND_DEFER = _e(
        "ERR_LENGTH_AND_DEFER", 400, "Upload-Length and Upload-Defer-Length are exclusive"
    )
    MISSING_LENGTH = _e(
        "ERR_MISSING_LENGTH", 400, "Upload-Length or Upload-Defer-Length: 1 is required"
    )
    INVALID_DEFER = _e("ERR_INVALID_DEFER", 400, "Upload-Defer-Length must be 1")
    LENGTH_ALREADY_SET = _e(
        "ERR_LENGTH_ALREADY_SET", 400, "the upload's length is already set and cannot change"
    )
    MAX_SIZE_EXCEEDED = _e("ERR_MAX_SIZE_EXCEEDED", 413, "upload exceeds Tus-Max-Size")
    BEYOND_LENGTH = _e("ERR_BEYOND_LENGTH", 413, "the body goes past Upload-Length")
    NOT_FOUND = _e("ERR_UPLOAD_NOT_FOUND", 404, "no such upload")
    GONE = _e("ERR_UPLOAD_GONE", 410, "the upload expired or was terminated")
    INVALID_METADATA = _e("ERR_INVALID_METADATA", 400, "Upload-Metadata is malformed")
    METADATA_TOO_LARGE = _e("ERR_METADATA_TOO_LARGE", 400, "Upload-Metadata is too large")
    UNSUPPORTED_CHECKSUM = _e(
        "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM", 400, "checksum algorithm not supported"
    )
    INVALID_CHECKSUM_HEADER = _e("ERR_INVALID_CHECKSUM", 400, "Upload-Checksum is malformed")
    CHECKSUM_MISMATCH = _e(
        "ERR_CHECKSUM_MISMATCH", 460, "checksum mismatch: the bytes of this request were discarded"
    )
    INVALID_CONCAT = _e("ERR_INVALID_CONCAT", 400, "Upload-Concat is malformed")
    CONCAT_PART_UNFINISHED = _e(
        "ERR_CONCAT_PART_UNFINISHED", 400, "a partial upload of the concatenation is not complete"
    )
    MODIFY_FINAL = _e(
        "ERR_MODIFY_FINAL", 403, "a final concatenated upload cannot be modified with PATCH"
    )
    UPLOAD_LOCKED = _e("ERR_UPLOAD_LOCKED", 423, "another request is writing to this upload")
    UPLOAD_TAKEN_OVER = _e(
        "ERR_UPLOAD_TAKEN_OVER", 409, "a newer PATCH took this stalled upload over"
    )
    DOWNLOAD_INCOMPLETE = _e(
        "ERR_INCOMPLETE_UPLOAD", 400, "this blob store cannot stream an unfinished upload"
    )
    UPLOAD_BYTES_LOST = _e(
        "ERR_UPLOAD_BYTES_LOST", 500, "acknowledged bytes of this upload are missing from storage"
    )
    READ_TIMEOUT = _e("ERR_READ_TIMEOUT", 408, "the request body stalled; what arrived was kept")
    BODY_TOO_SLOW = _e(
        "ERR_BODY_TOO_SLOW", 408, "the request body arrived too slowly; what arrived was kept"
    )
    UPLOAD_ACCEPTED = _e(
        "ERR_UPLOAD_ACCEPTED", 403, "a complete chunk upload is part of a meeting; not deleted"
    )
    # chunk keys carried in tus metadata
    CHUNK_METADATA = _e("ERR_CHUNK_METADATA", 400, "chunk metadata is invalid")
    CHUNK_LENGTH_CONFLICT = _e(
        "ERR_CHUNK_LENGTH_CONFLICT",
        409,
        "this chunk (meeting, track, seq) already exists with a different Upload-Length",
    )
    SEQ_AFTER_FINALIZE = _e(
        "ERR_SEQ_AFTER_FINALIZE", 409, "the meeting is finalized and this seq is past its last seq"
    )
    UNKNOWN_TRACK = _e("ERR_UNKNOWN_TRACK", 400, "the meeting does not declare this track")
    # meetings API
    MEETING_NOT_FOUND = _e("ERR_MEETING_NOT_FOUND", 404, "no such meeting")
    WEBHOOK_NOT_FOUND = _e("ERR_WEBHOOK_NOT_FOUND", 404, "no such webhook")
    CHUNK_NOT_FOUND = _e("ERR_CHUNK_NOT_FOUND", 404, "no such chunk")
    INVALID_JSON = _e("ERR_INVALID_JSON", 400, "the body must be a JSON object")
    INVALID_FIELD = _e("ERR_INVALID_FIELD", 400, "invalid field")
    LANGUAGE_NOT_IN_MODEL = _e(
        "ERR_LANGUAGE_NOT_IN_MODEL", 400, "the server's model cannot transcribe this language"
    )
    FINALIZE_CONFLICT = _e(
        "ERR_FINALIZE_CONFLICT", 409, "the meeting was already finalized with other last seqs"
    )
    NOT_RETRYABLE = _e("ERR_NOT_RETRYABLE", 409, "only a failed chunk can be retried")
    INVALID_FORMAT = _e("ERR_INVALID_FORMAT", 400, "format must be one of json, txt, srt, vtt")
    UNAUTHORIZED = _e("ERR_UNAUTHORIZED", 401, "an API key is required")
    MEETING_BUSY = _e(
        "ERR_MEETING_BUSY",
        409,
        "a chunk of the meeting is being uploaded or transcribed; delete it when that is done",
    )
    MEETING_CLOSED = _e(
        "ERR_MEETING_CLOSED", 409, "the meeting is complete; it takes no more chunks"
    )
    BACKLOG_FULL = _e(
        "ERR_BACKLOG_FULL",
        503,
        "the transcription backlog is over its limit; new meetings are refused for now",
    )
    WEBHOOK_TARGET_REFUSED = _e(
        "ERR_WEBHOOK_TARGET_REFUSED", 400, "webhooks may not be delivered to that address"
    )
    # per-key limits (server flags, overridable per key in the keys file)
    OPEN_MEETINGS_LIMIT = _e(
        "ERR_OPEN_MEETINGS_LIMIT", 403, "this API key has as many recording meetings as it may"
    )
    WEBHOOKS_LIMIT = _e("ERR_WEBHOOKS_LIMIT", 403, "this API key has as many webhooks as it may")
    UPLOAD_BYTES_LIMIT = _e(
        "ERR_UPLOAD_BYTES_LIMIT", 429, "this API key sent as many upload bytes today as it may"
    )
    HOST_NOT_ALLOWED = _e("ERR_HOST_NOT_ALLOWED", 403, "the Host header does not name this server")
    METHOD_NOT_ALLOWED = _e("ERR_METHOD_NOT_ALLOWED", 405, "method not allowed")
    ROUTE_NOT_FOUND = _e("ERR_NOT_FOUND", 404, "not found")
    BODY_TOO_LARGE = _e("ERR_BODY_TOO_LARGE", 413, "the request body is too large")
    BAD_REQUEST = _e("ERR_BAD_REQUEST", 400, "the request is malformed")
    DATABASE_UNAVAILABLE = _e(
        "ERR_DATABASE_UNAVAILABLE",
        503,
        "the database cannot serve requests right now; nothing of this request was kept, "
        "try again shortly",
    )
    BLOB_STORE_UNAVAILABLE = _e(
        "ERR_BLOB_STORE_UNAVAILABLE",
        503,
        "the blob store cannot be reached or cannot serve right now; what was acknowledged "
        "before is kept, try again shortly",
    )
    STORAGE_FULL = _e(
        "ERR_STORAGE_FULL",
        507,
        "the server's storage is full; what was acknowledged before is kept, try again later",
    )
    INTERNAL = _e("ERR_INTERNAL", 500, "internal server error")


FRAMEWORK_ERRORS = {400: Errors.BAD_REQUEST, 413: Errors.BODY_TOO_LARGE}


def refusal_kind(rule: Rule) -> ErrorKind:
    """A storage rule's answer: the error of the same name (tests/test_errors.py checks
    that every rule has one)."""
    kind = getattr(Errors, rule.name)
    assert isinstance(kind, ErrorKind)
    return kind


def refused(exc: Refused) -> ApiError:
    return ApiError(refusal_kind(exc.rule), exc.detail)


def error_response(
    kind: ErrorKind, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps({"error": {"code": kind.code, "message": message}})
    response = web.Response(
        status=kind.status, text=body, content_type="application/json", headers=headers
    )
    return response


def _store_refusal(exc: BaseException) -> tuple[ErrorKind, int] | None:
    """The answer to an error that says a store cannot take the request now, and the seconds
    to ask the client to wait; None for a fault."""
    which = unavailable_store(exc)
    if which == DATABASE:
        return Errors.DATABASE_UNAVAILABLE, UNAVAILABLE_RETRY_AFTER_S
    if which == BLOB_STORE:
        return Errors.BLOB_STORE_UNAVAILABLE, UNAVAILABLE_RETRY_AFTER_S
    if storage_full(exc):
        return Errors.STORAGE_FULL, STORAGE_FULL_RETRY_AFTER_S
    return None


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        try:
            return await handler(request)
        except Refused as refusal:
            raise refused(refusal) from None
    except ApiError as exc:
        headers = {"Tus-Resumable": TUS_VERSION, **exc.headers}
        if exc.kind.status == 412:
            headers["Tus-Version"] = TUS_VERSION
        response = error_response(exc.kind, exc.message, headers)
        if exc.kind.status == 408:
            response.force_close()  # the rest of the body is not read: no keep-alive
        return response
    except web.HTTPMethodNotAllowed as exc:
        return error_response(
            Errors.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.path}",
            # RFC 9110: a 405 lists the methods the resource does allow.
            {"Tus-Resumable": TUS_VERSION, "Allow": exc.headers.get("Allow", "")},
        )
    except web.HTTPNotFound:
        return error_response(
            Errors.ROUTE_NOT_FOUND, f"no route {request.path}", {"Tus-Resumable": TUS_VERSION}
        )
    except web.HTTPException as exc:  # aiohttp's own (client_max_size: 413), as JSON too
        if exc.status < 400:
            raise
        kind = FRAMEWORK_ERRORS.get(exc.status) or ErrorKind(
            f"ERR_HTTP_{exc.status}", exc.status, exc.reason
        )
        return error_response(kind, exc.text or kind.message)
    except Exception as exc:
        # A store that cannot serve for now (down, restarting, out of connections,
        # unreachable), or a full disk, is not a fault: one line, and the client told when
        # to come back.
        refusal = _store_refusal(exc)
        if refusal is not None:
            kind, retry_after_s = refusal
            # A full disk is the operator's to mend: an error; an outage passes by itself.
            level = logging.ERROR if kind is Errors.STORAGE_FULL else logging.WARNING
            log.log(level, "%s on %s %s: %s", kind.code, request.method, request.path, exc)
            return error_response(
                kind,
                kind.message,
                {"Tus-Resumable": TUS_VERSION, "Retry-After": str(retry_after_s)},
            )
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(Errors.INTERNAL, Errors.INTERNAL.message)
