"""The tus 1.0.0 routes, as far as OpenAPI can say them: headers, statuses, bodies."""

from __future__ import annotations

from server.api_description.parts import (
    HOST_REFUSED,
    PATH_NAMES_NOTHING,
    STORAGE_FULL,
    UPLOAD_BYTES_LIMIT,
    Json,
    header_param,
    operation,
    path_param,
    ref,
    response_headers,
    tus_error,
)
from server.errors import TUS_VERSION
from server.tus.handler import OCTET
from server.tus.headers import CHECKSUM_ALGORITHMS

TUS_RESUMABLE_PARAM = header_param(
    "Tus-Resumable",
    f"The tus version the client speaks; only {TUS_VERSION}. Anything else: 412.",
    {"type": "string", "const": TUS_VERSION},
    required=True,
)
UPLOAD_ID = path_param(
    "upload_id",
    "The upload's id: the last segment of the Location the creation answered.",
    {"type": "string", "minLength": 1},
)
DIGITS = {"type": "string", "pattern": "^[0-9]{1,19}$"}
UPLOAD_LENGTH_PARAM = header_param(
    "Upload-Length", "The upload's total size in bytes (ASCII digits).", DIGITS
)
UPLOAD_OFFSET_PARAM = header_param(
    "Upload-Offset",
    "Where this PATCH's bytes go; must equal the upload's offset (409 otherwise).",
    DIGITS,
    required=True,
)
UPLOAD_METADATA_PARAM = header_param(
    "Upload-Metadata",
    "`key base64(value),key2,...` (at most 4096 bytes). A meeting chunk carries meeting_id, "
    "track, seq and start_ms, and may carry track_label (1 to 100 printable characters: what "
    "transcripts show the track as, the latest chunk's winning); without them the upload is "
    "a plain tus upload.",
    {"type": "string", "maxLength": 4096},
)
UPLOAD_CHECKSUM_PARAM = header_param(
    "Upload-Checksum",
    f"`<algorithm> <base64 digest>` of this request's body; algorithms: "
    f"{', '.join(CHECKSUM_ALGORITHMS)}. A mismatch discards the bytes (460).",
    {"type": "string", "pattern": f"^({'|'.join(CHECKSUM_ALGORITHMS)}) [A-Za-z0-9+/]+=*$"},
)
OCTET_BODY: Json = {
    "required": False,
    "description": "The upload's bytes from Upload-Offset on.",
    "content": {OCTET: {"schema": {"type": "string", "format": "binary"}}},
}


# A creation-with-upload whose body fails after the upload was made: the refusal says
# where the upload is (server/tus/handler.py, create).
CREATED_ANYWAY: Json = {
    "Location": ref("headers", "Location-optional"),
    "Upload-Offset": ref("headers", "Upload-Offset-optional"),
}


def _creation(operation_id: str) -> Json:
    return operation(
        operation_id,
        "Create an upload (tus creation, creation-with-upload, defer-length, concatenation)",
        {
            "201": {
                "description": "Created, or the existing upload of the same chunk key "
                "(meeting_id, track, seq) with its offset.",
                "headers": response_headers(
                    "Tus-Resumable", "Location", optional=("Upload-Offset", "Upload-Expires")
                ),
            },
            "400": tus_error(
                "A malformed or conflicting tus header (ERR_INVALID_LENGTH, "
                "ERR_LENGTH_AND_DEFER, ERR_MISSING_LENGTH, ERR_INVALID_DEFER, "
                "ERR_INVALID_METADATA, ERR_METADATA_TOO_LARGE, ERR_INVALID_CONCAT, "
                "ERR_CONCAT_PART_UNFINISHED, ERR_INVALID_CHECKSUM, "
                "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM), or chunk metadata the meeting refuses "
                "(ERR_CHUNK_METADATA, ERR_UNKNOWN_TRACK)."
            ),
            "403": tus_error(f"{HOST_REFUSED} Or ERR_MODIFY_FINAL: a final upload with a body."),
            "404": tus_error("ERR_MEETING_NOT_FOUND: the chunk's meeting_id names no meeting."),
            "408": tus_error(
                "ERR_READ_TIMEOUT or ERR_BODY_TOO_SLOW: the creation body stalled or came "
                "slower than --min-body-rate.",
                **CREATED_ANYWAY,
            ),
            "409": tus_error(
                "ERR_CHUNK_LENGTH_CONFLICT, ERR_MEETING_CLOSED or ERR_SEQ_AFTER_FINALIZE."
            ),
            "412": tus_error(
                "ERR_UNSUPPORTED_VERSION", **{"Tus-Version": ref("headers", "Tus-Version")}
            ),
            "413": tus_error(
                "ERR_MAX_SIZE_EXCEEDED or ERR_BEYOND_LENGTH. Refused before anything is stored "
                "when Upload-Length or Content-Length tells; a chunked body found too long "
                "while read leaves the upload created, with Location and Upload-Offset.",
                **CREATED_ANYWAY,
            ),
            "415": tus_error("ERR_INVALID_CONTENT_TYPE: a body that is not " + OCTET + "."),
            "429": tus_error(UPLOAD_BYTES_LIMIT, **{"Retry-After": ref("headers", "Retry-After")}),
            "460": tus_error(
                "ERR_CHECKSUM_MISMATCH: the body was discarded; the upload was created "
                "(Location, Upload-Offset) and can be resumed.",
                **CREATED_ANYWAY,
            ),
            "507": tus_error(STORAGE_FULL, **{"Retry-After": ref("headers", "Retry-After")}),
        },
        tags=["tus"],
        tus=True,
        parameters=[
            TUS_RESUMABLE_PARAM,
            UPLOAD_LENGTH_PARAM,
            header_param(
                "Upload-Defer-Length",
                "`1`: the length is declared by a later PATCH. Exclusive with Upload-Length.",
                {"type": "string", "const": "1"},
            ),
            UPLOAD_METADATA_PARAM,
            header_param(
                "Upload-Concat",
                "`partial`, or `final;<upload URL> <upload URL> ...` (at most 1000 parts, "
                "each once, all complete partial uploads of the caller).",
                {"type": "string", "pattern": "^(partial|final;.+)$"},
            ),
            UPLOAD_CHECKSUM_PARAM,
        ],
        body=OCTET_BODY,
    )


UPLOAD_ERRORS: Json = {
    "404": tus_error(
        "ERR_UPLOAD_NOT_FOUND: no such upload (or another key's)." + PATH_NAMES_NOTHING
    ),
    "410": tus_error("ERR_UPLOAD_GONE: the upload expired or was terminated."),
    "412": tus_error("ERR_UNSUPPORTED_VERSION", **{"Tus-Version": ref("headers", "Tus-Version")}),
}

HEAD_OK: Json = {
    "description": "The upload's state. No body.",
    "headers": {
        **response_headers("Tus-Resumable", "Upload-Offset", "Cache-Control"),
        **response_headers(
            optional=(
                "Upload-Length",
                "Upload-Defer-Length",
                "Upload-Metadata",
                "Upload-Concat",
                "Upload-Expires",
            )
        ),
    },
}
PATCH_ERRORS: Json = {
    "400": tus_error(
        "ERR_INVALID_OFFSET, ERR_INVALID_LENGTH, ERR_LENGTH_ALREADY_SET, ERR_INVALID_CHECKSUM "
        "or ERR_UNSUPPORTED_CHECKSUM_ALGORITHM."
    ),
    "403": tus_error(f"{HOST_REFUSED} Or ERR_MODIFY_FINAL: a final upload takes no PATCH."),
    "408": tus_error(
        "ERR_READ_TIMEOUT or ERR_BODY_TOO_SLOW: the body stalled or came slower than "
        "--min-body-rate; what arrived was kept."
    ),
    "409": tus_error(
        "ERR_MISMATCHED_OFFSET (with the upload's Upload-Offset) or ERR_UPLOAD_TAKEN_OVER.",
        **{"Upload-Offset": ref("headers", "Upload-Offset-optional")},
    ),
    "413": tus_error("ERR_BEYOND_LENGTH or ERR_MAX_SIZE_EXCEEDED."),
    "415": tus_error(f"ERR_INVALID_CONTENT_TYPE: Content-Type must be {OCTET}."),
    "423": tus_error("ERR_UPLOAD_LOCKED: another request is writing this upload."),
    "429": tus_error(UPLOAD_BYTES_LIMIT, **{"Retry-After": ref("headers", "Retry-After")}),
    "460": tus_error("ERR_CHECKSUM_MISMATCH: the bytes of this request were discarded."),
    "507": tus_error(STORAGE_FULL, **{"Retry-After": ref("headers", "Retry-After")}),
}
PATCH_OK: Json = {
    "description": "The bytes are stored durably; Upload-Offset is the new offset.",
    "headers": response_headers("Tus-Resumable", "Upload-Offset", optional=("Upload-Expires",)),
}
DELETE_OK: Json = {
    "description": "Terminated: the upload and its bytes are gone.",
    "headers": response_headers("Tus-Resumable"),
}
DELETE_403 = tus_error(
    f"{HOST_REFUSED} Or ERR_UPLOAD_ACCEPTED: a complete chunk is part of its meeting."
)
PATCH_PARAMS = [
    TUS_RESUMABLE_PARAM,
    UPLOAD_OFFSET_PARAM,
    header_param(
        "Upload-Length",
        "Declares the length of a deferred-length upload.",
        DIGITS,
    ),
    UPLOAD_CHECKSUM_PARAM,
]
PATCH_BODY: Json = {**OCTET_BODY, "required": True}

OPTIONS_OP = operation(
    "",
    "tus discovery: version, extensions, maximum size, checksum algorithms",
    {
        "200": {
            "description": "What this tus server supports.",
            "headers": response_headers(
                "Tus-Resumable",
                "Tus-Version",
                "Tus-Extension",
                "Tus-Max-Size",
                "Tus-Checksum-Algorithm",
            ),
        },
        "204": {
            "description": "A CORS preflight from an origin named by --cors-origins "
            "(Origin and Access-Control-Request-Method sent).",
        },
    },
    tags=["tus"],
    tus=True,
    open_route=True,
    description="Needs no API key and no Tus-Resumable header.",
)


def tus_paths() -> Json:
    options = OPTIONS_OP
    upload = {
        "parameters": [UPLOAD_ID],
        "options": {**options, "operationId": "tusOptionsUpload"},
        "head": operation(
            "tusHead",
            "The upload's offset, length, metadata and expiry (resume from here)",
            {"200": HEAD_OK, **UPLOAD_ERRORS},
            tags=["tus"],
            tus=True,
            parameters=[TUS_RESUMABLE_PARAM],
            description="Error answers carry the JSON error body's headers but, as any "
            "answer to HEAD, no body.",
        ),
        "get": operation(
            "tusDownload",
            "Download the bytes stored so far (as tusd does)",
            {
                "200": {
                    "description": "The upload's bytes up to its offset.",
                    "headers": response_headers("Tus-Resumable"),
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "400": tus_error(
                    "ERR_INCOMPLETE_UPLOAD: this blob store cannot stream an unfinished upload."
                ),
                **UPLOAD_ERRORS,
            },
            tags=["tus"],
            tus=True,
            parameters=[TUS_RESUMABLE_PARAM],
        ),
        "patch": operation(
            "tusPatch",
            "Append bytes at Upload-Offset",
            {"204": PATCH_OK, **UPLOAD_ERRORS, **PATCH_ERRORS},
            tags=["tus"],
            tus=True,
            parameters=PATCH_PARAMS,
            body=PATCH_BODY,
        ),
        "delete": operation(
            "tusTerminate",
            "Terminate an upload (tus termination)",
            {
                "204": DELETE_OK,
                **UPLOAD_ERRORS,
                "403": DELETE_403,
                "423": tus_error("ERR_UPLOAD_LOCKED: a PATCH is writing this upload."),
            },
            tags=["tus"],
            tus=True,
            parameters=[TUS_RESUMABLE_PARAM],
        ),
        "post": operation(
            "tusMethodOverride",
            "PATCH, DELETE or HEAD for clients behind proxies that drop them",
            {
                "200": HEAD_OK,
                "204": {
                    "description": "As PATCH or DELETE answer.",
                    "headers": response_headers(
                        "Tus-Resumable", optional=("Upload-Offset", "Upload-Expires")
                    ),
                },
                **UPLOAD_ERRORS,
                **PATCH_ERRORS,
                "403": tus_error(
                    f"{HOST_REFUSED} Or ERR_MODIFY_FINAL, or ERR_UPLOAD_ACCEPTED (DELETE)."
                ),
                "405": tus_error(
                    "ERR_METHOD_NOT_ALLOWED: no or another override.",
                    Allow=ref("headers", "Allow"),
                ),
            },
            tags=["tus"],
            tus=True,
            parameters=[
                header_param(
                    "X-HTTP-Method-Override",
                    "The method this POST stands for.",
                    {"type": "string", "enum": ["PATCH", "DELETE", "HEAD"]},
                    required=True,
                ),
                TUS_RESUMABLE_PARAM,
                {**UPLOAD_OFFSET_PARAM, "required": False},
                PATCH_PARAMS[2],
                UPLOAD_CHECKSUM_PARAM,
            ],
            body=OCTET_BODY,
        ),
    }
    return {
        "/files": {"post": _creation("tusCreateNoSlash")},
        "/files/": {
            "post": _creation("tusCreate"),
            "options": {**options, "operationId": "tusOptions"},
        },
        "/files/{upload_id}": upload,
    }
