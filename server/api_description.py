"""The OpenAPI 3.1 description of every route: the one place that says what the API takes
and answers. Served at /openapi.json; tests/test_openapi.py holds it to the app's router
and tests/test_fuzz_api.py to the live server's answers.

Built in Python rather than kept as a JSON file so that the names it shares with the code
(the error codes, the tus version and extensions, the transcript formats, the webhook event
types) come from the code and cannot drift from it.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from server.errors import TUS_VERSION, ErrorKind, Errors
from server.params import MAX_DB_INT, MAX_TRACK_CHARS
from server.tus.handler import EXTENSIONS, OCTET
from server.tus.headers import CHECKSUM_ALGORITHMS
from server.webhooks_api import EVENT_TYPES
from transcribe.transcript_formats import FORMATS

Json = dict[str, Any]

# aiohttp registers HEAD beside every web.get() (allow_head); those answer as GET without a
# body and are not described one by one. The tus HEAD is its own route and is described.
ERROR_CODES = sorted({v.code for v in vars(Errors).values() if isinstance(v, ErrorKind)})


def _ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _error(description: str, headers: Json | None = None) -> Json:
    response: Json = {"description": description, "content": _json(_ref("schemas", "Error"))}
    if headers:
        response["headers"] = headers
    return response


def _tus_error(description: str, **extra_headers: Json) -> Json:
    return _error(description, {"Tus-Resumable": _ref("headers", "Tus-Resumable"), **extra_headers})


# ---- shared pieces --------------------------------------------------------------------------

UNAUTHORIZED = _error(
    "ERR_UNAUTHORIZED: the server has API keys and the request names none of them.",
    {"WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
)
HOST_REFUSED = (
    "ERR_HOST_NOT_ALLOWED: the server has no API keys and the Host header is not a loopback "
    "name nor the host of --public-url (DNS rebinding)."
)
INTERNAL = _error("ERR_INTERNAL: a server fault (logged); never expected.")
BODY_TOO_LARGE = _error("ERR_BODY_TOO_LARGE: the JSON body is over 1 MiB.")


def _common(open_route: bool = False, tus: bool = False) -> Json:
    """What any route may answer whatever it does: the middlewares' refusals."""
    responses: Json = {
        "403": _tus_error(HOST_REFUSED) if tus else _error(HOST_REFUSED),
        "500": INTERNAL,
    }
    if not open_route:
        responses["401"] = (
            _tus_error(
                "ERR_UNAUTHORIZED: the server has API keys and the request names none.",
                **{"WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
            )
            if tus
            else UNAUTHORIZED
        )
    return responses


OPEN_SECURITY: list[Json] = [{}, {"bearerAuth": []}]


def _op(
    operation_id: str,
    summary: str,
    responses: Json,
    *,
    tags: list[str],
    description: str = "",
    parameters: list[Json] | None = None,
    body: Json | None = None,
    open_route: bool = False,
    tus: bool = False,
) -> Json:
    op: Json = {
        "operationId": operation_id,
        "summary": summary,
        "tags": tags,
        "responses": {**_common(open_route, tus), **responses},
    }
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    if open_route:
        op["security"] = OPEN_SECURITY
    return op


def _path_param(name: str, description: str, schema: Json | None = None) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


def _header(name: str, description: str, schema: Json, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _response_headers(*names: str, optional: tuple[str, ...] = ()) -> Json:
    headers = {name: _ref("headers", name) for name in names}
    for name in optional:
        headers[name] = _ref("headers", name + "-optional")
    return headers


# ---- tus --------------------------------------------------------------------------------

TUS_RESUMABLE_PARAM = _header(
    "Tus-Resumable",
    f"The tus version the client speaks; only {TUS_VERSION}. Anything else: 412.",
    {"type": "string", "const": TUS_VERSION},
    required=True,
)
UPLOAD_ID = _path_param(
    "upload_id",
    "The upload's id: the last segment of the Location the creation answered.",
    {"type": "string", "minLength": 1},
)
DIGITS = {"type": "string", "pattern": "^[0-9]{1,19}$"}
UPLOAD_LENGTH_PARAM = _header(
    "Upload-Length", "The upload's total size in bytes (ASCII digits).", DIGITS
)
UPLOAD_OFFSET_PARAM = _header(
    "Upload-Offset",
    "Where this PATCH's bytes go; must equal the upload's offset (409 otherwise).",
    DIGITS,
    required=True,
)
UPLOAD_METADATA_PARAM = _header(
    "Upload-Metadata",
    "`key base64(value),key2,...` (at most 4096 bytes). A meeting chunk carries meeting_id, "
    "track, seq and start_ms; without them the upload is a plain tus upload.",
    {"type": "string", "maxLength": 4096},
)
UPLOAD_CHECKSUM_PARAM = _header(
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
    "Location": _ref("headers", "Location-optional"),
    "Upload-Offset": _ref("headers", "Upload-Offset-optional"),
}


def _creation(operation_id: str) -> Json:
    return _op(
        operation_id,
        "Create an upload (tus creation, creation-with-upload, defer-length, concatenation)",
        {
            "201": {
                "description": "Created, or the existing upload of the same chunk key "
                "(meeting_id, track, seq) with its offset.",
                "headers": _response_headers(
                    "Tus-Resumable", "Location", optional=("Upload-Offset", "Upload-Expires")
                ),
            },
            "400": _tus_error(
                "A malformed or conflicting tus header (ERR_INVALID_LENGTH, "
                "ERR_LENGTH_AND_DEFER, ERR_MISSING_LENGTH, ERR_INVALID_DEFER, "
                "ERR_INVALID_METADATA, ERR_METADATA_TOO_LARGE, ERR_INVALID_CONCAT, "
                "ERR_CONCAT_PART_UNFINISHED, ERR_INVALID_CHECKSUM, "
                "ERR_UNSUPPORTED_CHECKSUM_ALGORITHM), or chunk metadata the meeting refuses "
                "(ERR_CHUNK_METADATA, ERR_UNKNOWN_TRACK)."
            ),
            "403": _tus_error(f"{HOST_REFUSED} Or ERR_MODIFY_FINAL: a final upload with a body."),
            "404": _tus_error("ERR_MEETING_NOT_FOUND: the chunk's meeting_id names no meeting."),
            "408": _tus_error("ERR_READ_TIMEOUT: the creation body stalled.", **CREATED_ANYWAY),
            "409": _tus_error(
                "ERR_CHUNK_LENGTH_CONFLICT, ERR_MEETING_CLOSED or ERR_SEQ_AFTER_FINALIZE."
            ),
            "412": _tus_error(
                "ERR_UNSUPPORTED_VERSION", **{"Tus-Version": _ref("headers", "Tus-Version")}
            ),
            "413": _tus_error(
                "ERR_MAX_SIZE_EXCEEDED or ERR_BEYOND_LENGTH. Refused before anything is stored "
                "when Upload-Length or Content-Length tells; a chunked body found too long "
                "while read leaves the upload created, with Location and Upload-Offset.",
                **CREATED_ANYWAY,
            ),
            "415": _tus_error("ERR_INVALID_CONTENT_TYPE: a body that is not " + OCTET + "."),
            "460": _tus_error(
                "ERR_CHECKSUM_MISMATCH: the body was discarded; the upload was created "
                "(Location, Upload-Offset) and can be resumed.",
                **CREATED_ANYWAY,
            ),
        },
        tags=["tus"],
        tus=True,
        parameters=[
            TUS_RESUMABLE_PARAM,
            UPLOAD_LENGTH_PARAM,
            _header(
                "Upload-Defer-Length",
                "`1`: the length is declared by a later PATCH. Exclusive with Upload-Length.",
                {"type": "string", "const": "1"},
            ),
            UPLOAD_METADATA_PARAM,
            _header(
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
    "404": _tus_error("ERR_UPLOAD_NOT_FOUND: no such upload (or another key's)."),
    "410": _tus_error("ERR_UPLOAD_GONE: the upload expired or was terminated."),
    "412": _tus_error("ERR_UNSUPPORTED_VERSION", **{"Tus-Version": _ref("headers", "Tus-Version")}),
}

HEAD_OK: Json = {
    "description": "The upload's state. No body.",
    "headers": {
        **_response_headers("Tus-Resumable", "Upload-Offset", "Cache-Control"),
        **_response_headers(
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
    "400": _tus_error(
        "ERR_INVALID_OFFSET, ERR_INVALID_LENGTH, ERR_LENGTH_ALREADY_SET, ERR_INVALID_CHECKSUM "
        "or ERR_UNSUPPORTED_CHECKSUM_ALGORITHM."
    ),
    "403": _tus_error(f"{HOST_REFUSED} Or ERR_MODIFY_FINAL: a final upload takes no PATCH."),
    "408": _tus_error("ERR_READ_TIMEOUT: the body stalled; what arrived was kept."),
    "409": _tus_error(
        "ERR_MISMATCHED_OFFSET (with the upload's Upload-Offset) or ERR_UPLOAD_TAKEN_OVER.",
        **{"Upload-Offset": _ref("headers", "Upload-Offset-optional")},
    ),
    "413": _tus_error("ERR_BEYOND_LENGTH or ERR_MAX_SIZE_EXCEEDED."),
    "415": _tus_error(f"ERR_INVALID_CONTENT_TYPE: Content-Type must be {OCTET}."),
    "423": _tus_error("ERR_UPLOAD_LOCKED: another request is writing this upload."),
    "460": _tus_error("ERR_CHECKSUM_MISMATCH: the bytes of this request were discarded."),
}
PATCH_OK: Json = {
    "description": "The bytes are stored durably; Upload-Offset is the new offset.",
    "headers": _response_headers("Tus-Resumable", "Upload-Offset", optional=("Upload-Expires",)),
}
DELETE_OK: Json = {
    "description": "Terminated: the upload and its bytes are gone.",
    "headers": _response_headers("Tus-Resumable"),
}
DELETE_403 = _tus_error(
    f"{HOST_REFUSED} Or ERR_UPLOAD_ACCEPTED: a complete chunk is part of its meeting."
)
PATCH_PARAMS = [
    TUS_RESUMABLE_PARAM,
    UPLOAD_OFFSET_PARAM,
    _header(
        "Upload-Length",
        "Declares the length of a deferred-length upload.",
        DIGITS,
    ),
    UPLOAD_CHECKSUM_PARAM,
]
PATCH_BODY: Json = {**OCTET_BODY, "required": True}

OPTIONS_OP = _op(
    "",
    "tus discovery: version, extensions, maximum size, checksum algorithms",
    {
        "200": {
            "description": "What this tus server supports.",
            "headers": _response_headers(
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


def _tus_paths() -> Json:
    options = OPTIONS_OP
    upload = {
        "parameters": [UPLOAD_ID],
        "options": {**options, "operationId": "tusOptionsUpload"},
        "head": _op(
            "tusHead",
            "The upload's offset, length, metadata and expiry (resume from here)",
            {"200": HEAD_OK, **UPLOAD_ERRORS},
            tags=["tus"],
            tus=True,
            parameters=[TUS_RESUMABLE_PARAM],
            description="Error answers carry the JSON error body's headers but, as any "
            "answer to HEAD, no body.",
        ),
        "get": _op(
            "tusDownload",
            "Download the bytes stored so far (as tusd does)",
            {
                "200": {
                    "description": "The upload's bytes up to its offset.",
                    "headers": _response_headers("Tus-Resumable"),
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "400": _tus_error(
                    "ERR_INCOMPLETE_UPLOAD: this blob store cannot stream an unfinished upload."
                ),
                **UPLOAD_ERRORS,
            },
            tags=["tus"],
            tus=True,
            parameters=[TUS_RESUMABLE_PARAM],
        ),
        "patch": _op(
            "tusPatch",
            "Append bytes at Upload-Offset",
            {"204": PATCH_OK, **UPLOAD_ERRORS, **PATCH_ERRORS},
            tags=["tus"],
            tus=True,
            parameters=PATCH_PARAMS,
            body=PATCH_BODY,
        ),
        "delete": _op(
            "tusTerminate",
            "Terminate an upload (tus termination)",
            {
                "204": DELETE_OK,
                **UPLOAD_ERRORS,
                "403": DELETE_403,
                "423": _tus_error("ERR_UPLOAD_LOCKED: a PATCH is writing this upload."),
            },
            tags=["tus"],
            tus=True,
            parameters=[TUS_RESUMABLE_PARAM],
        ),
        "post": _op(
            "tusMethodOverride",
            "PATCH, DELETE or HEAD for clients behind proxies that drop them",
            {
                "200": HEAD_OK,
                "204": {
                    "description": "As PATCH or DELETE answer.",
                    "headers": _response_headers(
                        "Tus-Resumable", optional=("Upload-Offset", "Upload-Expires")
                    ),
                },
                **UPLOAD_ERRORS,
                **PATCH_ERRORS,
                "403": _tus_error(
                    f"{HOST_REFUSED} Or ERR_MODIFY_FINAL, or ERR_UPLOAD_ACCEPTED (DELETE)."
                ),
                "405": _tus_error(
                    "ERR_METHOD_NOT_ALLOWED: no or another override.",
                    Allow=_ref("headers", "Allow"),
                ),
            },
            tags=["tus"],
            tus=True,
            parameters=[
                _header(
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


# ---- meetings ---------------------------------------------------------------------------

MEETING_ID = _path_param("meeting_id", "The meeting's id (`m_...`), as its creation answered.")
MEETING_NOT_FOUND = _error("ERR_MEETING_NOT_FOUND: no such meeting (or another key's).")


def _json_body(schema_name: str, required: bool) -> Json:
    return {
        "required": required,
        "description": "A JSON object. An empty body reads as {}.",
        "content": _json(_ref("schemas", schema_name)),
    }


def _meeting_paths() -> Json:
    meeting_ok = {"description": "The meeting.", "content": _json(_ref("schemas", "Meeting"))}
    return {
        "/meetings": {
            "post": _op(
                "createMeeting",
                "Create a meeting (idempotent on external_id)",
                {
                    "200": {
                        "description": "The existing meeting with this external_id.",
                        "content": _json(_ref("schemas", "Meeting")),
                    },
                    "201": {
                        "description": "Created.",
                        "content": _json(_ref("schemas", "Meeting")),
                    },
                    "400": _error("ERR_INVALID_JSON or ERR_INVALID_FIELD."),
                    "413": BODY_TOO_LARGE,
                    "503": _error("ERR_BACKLOG_FULL: the transcription backlog is over its limit."),
                },
                tags=["meetings"],
                body=_json_body("MeetingCreate", required=False),
            )
        },
        "/meetings/{meeting_id}": {
            "parameters": [MEETING_ID],
            "get": _op(
                "getMeeting",
                "A meeting: state, chunks, progress, gaps",
                {"200": meeting_ok, "404": MEETING_NOT_FOUND},
                tags=["meetings"],
            ),
        },
        "/meetings/{meeting_id}/finalize": {
            "parameters": [MEETING_ID],
            "post": _op(
                "finalizeMeeting",
                "Declare the last seq of each track (idempotent with the same last_seq)",
                {
                    "200": meeting_ok,
                    "400": _error(
                        "ERR_INVALID_JSON, ERR_INVALID_FIELD (also: chunks exist past last_seq, "
                        "or too many chunks still missing) or ERR_UNKNOWN_TRACK."
                    ),
                    "404": MEETING_NOT_FOUND,
                    "409": _error("ERR_FINALIZE_CONFLICT: finalized before with another last_seq."),
                    "413": BODY_TOO_LARGE,
                },
                tags=["meetings"],
                body=_json_body("Finalize", required=True),
            ),
        },
        "/meetings/{meeting_id}/transcript": {
            "parameters": [MEETING_ID],
            "get": _op(
                "getTranscript",
                "The transcript so far (final once the meeting is complete)",
                {
                    "200": {
                        "description": "The transcript in the asked format.",
                        "content": {
                            FORMATS["json"]: {"schema": _ref("schemas", "Transcript")},
                            **{
                                FORMATS[f].split(";")[0]: {"schema": {"type": "string"}}
                                for f in FORMATS
                                if f != "json"
                            },
                        },
                    },
                    "400": _error("ERR_INVALID_FORMAT"),
                    "404": MEETING_NOT_FOUND,
                },
                tags=["meetings"],
                parameters=[
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": list(FORMATS), "default": "json"},
                    }
                ],
            ),
        },
        "/meetings/{meeting_id}/chunks/{track}/{seq}/retry": {
            "parameters": [
                MEETING_ID,
                _path_param("track", "The chunk's track."),
                _path_param(
                    "seq",
                    "The chunk's seq (ASCII digits).",
                    {"type": "string", "pattern": "^[0-9]{1,10}$"},
                ),
            ],
            "post": _op(
                "retryChunk",
                "Queue a failed chunk for transcription again",
                {
                    "202": {
                        "description": "Queued again; the meeting.",
                        "content": _json(_ref("schemas", "Meeting")),
                    },
                    "400": _error("ERR_INVALID_FIELD: seq is not an integer."),
                    "404": _error("ERR_MEETING_NOT_FOUND or ERR_CHUNK_NOT_FOUND."),
                    "409": _error("ERR_NOT_RETRYABLE: only a failed chunk can be retried."),
                },
                tags=["meetings"],
            ),
        },
        "/meetings/{meeting_id}/events": {
            "parameters": [MEETING_ID],
            "get": _op(
                "meetingEvents",
                "Server-Sent Events of the meeting, with Last-Event-ID replay",
                {
                    "200": {
                        "description": "An endless `text/event-stream` (until=complete: until "
                        "meeting.completed or meeting.failed). Each logged event has `id:`, "
                        "`event:` (its type) and `data:` (JSON); `meeting.progress` events "
                        "(lag, queue position, ETA) carry no id and are not replayed.",
                        "headers": _response_headers("Cache-Control"),
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _error("ERR_INVALID_FIELD: Last-Event-ID is not an event id."),
                    "404": MEETING_NOT_FOUND,
                },
                tags=["meetings"],
                parameters=[
                    _header(
                        "Last-Event-ID",
                        "Replay events after this id (an EventSource sends it on reconnect).",
                        {"type": "string", "pattern": "^[0-9]{1,10}$"},
                    ),
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "required": False,
                        "description": "As Last-Event-ID, which wins when both are sent.",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
                    },
                    {
                        "name": "until",
                        "in": "query",
                        "required": False,
                        "description": "`complete`: end the stream when the meeting ends.",
                        "schema": {"type": "string"},
                    },
                ],
            ),
        },
    }


# ---- webhooks ---------------------------------------------------------------------------

WEBHOOK_ID = _path_param("webhook_id", "The webhook's id (`wh_...`).")
WEBHOOK_NOT_FOUND = _error("ERR_WEBHOOK_NOT_FOUND: no such webhook (or another key's).")


def _webhook_paths() -> Json:
    replayed = {
        "description": "Dead deliveries queued again.",
        "content": _json(_ref("schemas", "Replayed")),
    }
    return {
        "/webhooks": {
            "post": _op(
                "createWebhook",
                "Subscribe a URL to events (signed with the secret, Standard Webhooks)",
                {
                    "201": {
                        "description": "Created.",
                        "content": _json(_ref("schemas", "Webhook")),
                    },
                    "400": _error(
                        "ERR_INVALID_JSON, ERR_INVALID_FIELD or ERR_WEBHOOK_TARGET_REFUSED (a "
                        "private, loopback or link-local address not in --webhook-allow-networks)."
                    ),
                    "413": BODY_TOO_LARGE,
                },
                tags=["webhooks"],
                body=_json_body("WebhookCreate", required=True),
            ),
            "get": _op(
                "listWebhooks",
                "The caller's webhooks",
                {
                    "200": {
                        "description": "Oldest first.",
                        "content": _json(_ref("schemas", "WebhookList")),
                    }
                },
                tags=["webhooks"],
            ),
        },
        "/webhooks/{webhook_id}": {
            "parameters": [WEBHOOK_ID],
            "delete": _op(
                "deleteWebhook",
                "Unsubscribe (its deliveries go too)",
                {"204": {"description": "Deleted."}, "404": WEBHOOK_NOT_FOUND},
                tags=["webhooks"],
            ),
        },
        "/webhooks/{webhook_id}/deliveries": {
            "parameters": [WEBHOOK_ID],
            "get": _op(
                "listDeliveries",
                "The webhook's deliveries (dead letters included), at most 1000",
                {
                    "200": {
                        "description": "Oldest event first.",
                        "content": _json(_ref("schemas", "DeliveryList")),
                    },
                    "400": _error("ERR_INVALID_FIELD: status is not pending, delivered or dead."),
                    "404": WEBHOOK_NOT_FOUND,
                },
                tags=["webhooks"],
                parameters=[
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["pending", "delivered", "dead"]},
                    }
                ],
            ),
        },
        "/webhooks/{webhook_id}/replay": {
            "parameters": [WEBHOOK_ID],
            "post": _op(
                "replayDeliveries",
                "Queue every dead delivery of the webhook again",
                {"202": replayed, "404": WEBHOOK_NOT_FOUND},
                tags=["webhooks"],
            ),
        },
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay": {
            "parameters": [
                WEBHOOK_ID,
                _path_param(
                    "delivery_id",
                    "The delivery's id (ASCII digits).",
                    {"type": "string", "pattern": "^[0-9]{1,10}$"},
                ),
            ],
            "post": _op(
                "replayDelivery",
                "Queue one dead delivery again",
                {
                    "202": replayed,
                    "400": _error("ERR_INVALID_FIELD: the delivery id is not an integer."),
                    "404": WEBHOOK_NOT_FOUND,
                    "409": _error("ERR_NOT_RETRYABLE: only a dead delivery can be replayed."),
                },
                tags=["webhooks"],
            ),
        },
    }


# ---- operations and docs ----------------------------------------------------------------


def _ops_paths() -> Json:
    return {
        "/healthz": {
            "get": _op(
                "healthz",
                "Liveness: the process answers",
                {
                    "200": {
                        "description": "Alive.",
                        "content": _json(
                            {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            }
                        ),
                    }
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/readyz": {
            "get": _op(
                "readyz",
                "Readiness: database, blob store, model and backlog",
                {
                    "200": {"description": "Ready.", "content": _json(_ref("schemas", "Ready"))},
                    "503": {
                        "description": "Not ready; `checks` says why.",
                        "content": _json(_ref("schemas", "Ready")),
                    },
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics (a key limits the meeting ids named to its own)",
                {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This description",
                {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": _json({"type": "object", "required": ["openapi", "paths"]}),
                    }
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/docs": {
            "get": _op(
                "docs",
                "This description as a page (Swagger UI, served from the package)",
                {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
                tags=["operations"],
                open_route=True,
            )
        },
        "/docs/{asset}": {
            "parameters": [_path_param("asset", "A Swagger UI file the page loads.")],
            "get": _op(
                "docsAsset",
                "A Swagger UI asset",
                {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/css": {"schema": {"type": "string"}},
                            "application/javascript": {"schema": {"type": "string"}},
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "404": _error("ERR_NOT_FOUND: no such asset."),
                },
                tags=["operations"],
                open_route=True,
            ),
        },
    }


# ---- components -------------------------------------------------------------------------

NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NON_BLANK = "\\S"

# server/params.py's is_track_name, as near as a pattern gets: printable is Python's
# str.isprintable (no control, format or separator characters but the space).
TRACK_NAME: Json = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_TRACK_CHARS,
    "allOf": [{"pattern": NON_BLANK}, {"pattern": "^[^\\x00-\\x1f\\x7f-\\xa0]+$"}],
    "description": "1 to 200 printable characters, not all blank.",
}

SCHEMAS: Json = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "pattern": "^ERR_[A-Z0-9_]+$",
                        "description": "Stable and machine-readable: one of "
                        + ", ".join(ERROR_CODES)
                        + ", or ERR_HTTP_<status> for a refusal by the HTTP layer.",
                    },
                    "message": {"type": "string", "description": "For people; may change."},
                },
            }
        },
    },
    "MeetingCreate": {
        "type": "object",
        "properties": {
            "title": {**NULLABLE_STR, "minLength": 1, "maxLength": 500, "pattern": NON_BLANK},
            "external_id": {
                **NULLABLE_STR,
                "minLength": 1,
                "maxLength": 200,
                "pattern": NON_BLANK,
                "description": "The caller's own id: a second creation with it answers the "
                "first meeting (200).",
            },
            "tracks": {
                "type": "array",
                "maxItems": 64,
                "uniqueItems": True,
                "items": TRACK_NAME,
                "description": "The tracks chunks may name; none: any track.",
            },
        },
    },
    "Finalize": {
        "type": "object",
        "required": ["last_seq"],
        "properties": {
            "last_seq": {
                "type": "object",
                "description": "The last seq of each track.",
                "additionalProperties": {"type": "integer", "minimum": 0},
            }
        },
    },
    "Meeting": {
        "type": "object",
        "required": [
            "id",
            "external_id",
            "title",
            "tracks",
            "state",
            "last_seq",
            "error",
            "created_at",
            "finalized_at",
            "completed_at",
            "waiting_for",
            "progress",
            "missing",
            "gaps",
            "chunks",
        ],
        "properties": {
            "id": {"type": "string"},
            "external_id": NULLABLE_STR,
            "title": NULLABLE_STR,
            "tracks": {"type": "array", "items": {"type": "string"}},
            "state": {
                "type": "string",
                "enum": ["recording", "finalizing", "complete", "failed", "abandoned"],
            },
            "last_seq": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
            "error": NULLABLE_STR,
            "created_at": {"type": "number"},
            "finalized_at": NULLABLE_NUM,
            "completed_at": NULLABLE_NUM,
            "waiting_for": {"type": "array"},
            "progress": {
                "type": "object",
                "required": ["lag_audio_s", "queue_position", "eta_s"],
                "properties": {
                    "lag_audio_s": {"type": "number", "minimum": 0},
                    "queue_position": NULLABLE_INT,
                    "eta_s": {"type": "number", "minimum": 0},
                },
            },
            "missing": {"type": "array"},
            "gaps": {"type": "array", "items": _ref("schemas", "TrackSeq")},
            "chunks": {"type": "array", "items": _ref("schemas", "Chunk")},
        },
    },
    "TrackSeq": {
        "type": "object",
        "required": ["track", "seq"],
        "properties": {"track": {"type": "string"}, "seq": {"type": "integer"}},
    },
    "Chunk": {
        "type": "object",
        "required": ["track", "seq", "start_ms", "state", "bytes", "length", "upload_url"],
        "properties": {
            "track": {"type": "string"},
            "seq": {"type": "integer", "minimum": 0, "maximum": MAX_DB_INT},
            "start_ms": {"type": "integer", "minimum": 0},
            "state": {
                "type": "string",
                "enum": [
                    "created",
                    "uploading",
                    "uploaded",
                    "rejected",
                    "waiting",
                    "queued",
                    "transcribing",
                    "transcribed",
                    "failed",
                    "cancelled",
                ],
            },
            "error": NULLABLE_STR,
            "bytes": {"type": "integer", "minimum": 0},
            "length": NULLABLE_INT,
            "duration_s": NULLABLE_NUM,
            "attempts": {"type": "integer"},
            "transcribed_at": NULLABLE_NUM,
            "worker": NULLABLE_STR,
            "upload_url": {"type": "string"},
        },
    },
    "Transcript": {
        "type": "object",
        "required": ["meeting_id", "final", "segments", "gaps"],
        "properties": {
            "meeting_id": {"type": "string"},
            "final": {"type": "boolean"},
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["start", "end", "track", "text", "words"],
                    "properties": {
                        "start": {"type": "number"},
                        "end": {"type": "number"},
                        "track": {"type": "string"},
                        "text": {"type": "string"},
                        "words": {"type": "array"},
                    },
                },
            },
            "gaps": {"type": "array"},
        },
    },
    "WebhookCreate": {
        "type": "object",
        "required": ["url", "secret", "events"],
        "properties": {
            "url": {"type": "string", "format": "uri", "pattern": "^https?://"},
            "secret": {
                "type": "string",
                "pattern": "^whsec_[A-Za-z0-9+/]+=*$",
                "description": "`whsec_` + base64 of a 24 to 64 byte key.",
            },
            "events": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": sorted(EVENT_TYPES)},
            },
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["id", "url", "events", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "number"},
        },
    },
    "WebhookList": {
        "type": "object",
        "required": ["webhooks"],
        "properties": {"webhooks": {"type": "array", "items": _ref("schemas", "Webhook")}},
    },
    "DeliveryList": {
        "type": "object",
        "required": ["deliveries"],
        "properties": {
            "deliveries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "event_id", "type", "status", "attempts"],
                    "properties": {
                        "id": {"type": "integer"},
                        "event_id": {"type": "integer"},
                        "type": {"type": "string"},
                        "meeting_id": NULLABLE_STR,
                        "status": {"type": "string", "enum": ["pending", "delivered", "dead"]},
                        "attempts": {"type": "integer"},
                        "last_status": NULLABLE_INT,
                        "last_error": NULLABLE_STR,
                        "next_attempt_at": NULLABLE_NUM,
                        "delivered_at": NULLABLE_NUM,
                    },
                },
            }
        },
    },
    "Replayed": {
        "type": "object",
        "required": ["replayed"],
        "properties": {"replayed": {"type": "integer", "minimum": 0}},
    },
    "Ready": {
        "type": "object",
        "required": ["ready", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}


def _h(description: str, schema: Json, required: bool = True) -> Json:
    return {"description": description, "required": required, "schema": schema}


_DIGITS_SCHEMA = {"type": "string", "pattern": "^[0-9]+$"}
_OPTIONAL_HEADERS: Json = {
    "Location": _h("The upload's URL.", {"type": "string", "format": "uri"}),
    "Upload-Offset": _h("The upload's offset in bytes.", _DIGITS_SCHEMA),
    "Upload-Expires": _h("When an unfinished upload expires (an HTTP date).", {"type": "string"}),
    "Upload-Length": _h("The upload's length in bytes.", _DIGITS_SCHEMA),
    "Upload-Defer-Length": _h("`1`: the length is not declared yet.", {"const": "1"}),
    "Upload-Metadata": _h("The metadata the creation gave.", {"type": "string"}),
    "Upload-Concat": _h(
        "`partial`, or `final;` and its parts' URLs.",
        {"type": "string", "pattern": "^(partial|final;.*)$"},
    ),
}
HEADERS: Json = {
    "Tus-Resumable": _h("The tus version the server speaks.", {"const": TUS_VERSION}),
    "Tus-Version": _h("The tus versions the server supports.", {"const": TUS_VERSION}),
    "Tus-Extension": _h("Supported tus extensions.", {"const": EXTENSIONS}),
    "Tus-Max-Size": _h("The largest upload, in bytes.", _DIGITS_SCHEMA),
    "Tus-Checksum-Algorithm": _h(
        "Upload-Checksum algorithms.", {"const": ",".join(CHECKSUM_ALGORITHMS)}
    ),
    "Allow": _h("The methods the URL answers.", {"type": "string", "minLength": 1}),
    "Cache-Control": _h("Never cached.", {"type": "string", "pattern": "no-(store|cache)"}),
    "WWW-Authenticate": _h("The bearer challenge.", {"type": "string", "pattern": "^Bearer "}),
    **_OPTIONAL_HEADERS,
    **{
        name + "-optional": {**header, "required": False}
        for name, header in _OPTIONAL_HEADERS.items()
    },
}

DESCRIPTION = f"""\
Resumable chunked-recording ingestion: a recorder creates a meeting, uploads each chunk of
each track with tus {TUS_VERSION} (meeting_id, track, seq and start_ms in Upload-Metadata),
finalizes with the last seq of each track, and reads the transcript or follows the meeting's
events.

Every error body is `{{"error": {{"code": "ERR_...", "message": "..."}}}}`; the code is
stable. Answers on tus routes, errors included, carry `Tus-Resumable`.

**API keys.** When the server is started with keys (--api-keys-file, ROLLSCRIBE_API_KEYS),
every route but OPTIONS, /healthz, /readyz, /metrics, /openapi.json and /docs needs
`Authorization: Bearer <key>` (401 with `WWW-Authenticate` otherwise), and a key sees only
its own meetings, uploads and webhooks (another's are 404). Without keys, no route needs
one, but the Host header must be a loopback name or the host of --public-url (403).

**CORS.** For an origin named by --cors-origins, any path answers a preflight (OPTIONS with
Access-Control-Request-Method) with 204 and every answer carries Access-Control-Allow-Origin.

Every GET route also answers HEAD (as GET, without a body); those are not listed one by one.
An unknown path is 404 ERR_NOT_FOUND, a known path with another method 405
ERR_METHOD_NOT_ALLOWED with `Allow`.
"""


@cache
def _document() -> Json:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rollscribe",
            "version": "0.1.0",
            "summary": "Resumable chunked-recording ingestion and incremental transcription",
            "description": DESCRIPTION,
        },
        "tags": [
            {"name": "tus", "description": f"tus {TUS_VERSION}; extensions: {EXTENSIONS}."},
            {"name": "meetings"},
            {"name": "webhooks"},
            {"name": "operations"},
        ],
        "security": [{"bearerAuth": []}],
        "paths": {**_tus_paths(), **_meeting_paths(), **_webhook_paths(), **_ops_paths()},
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key, when the server has keys; without keys, none.",
                }
            },
            "schemas": SCHEMAS,
            "headers": HEADERS,
        },
    }


WITHOUT_KEYS_NOTE = "\n**This server has no API keys**: no route takes one, and none answers 401.\n"


def _without_keys(document: Json) -> Json:
    """The description as a server without keys answers: no security, no 401."""
    document = copy.deepcopy(document)
    document["security"] = []
    document["info"]["description"] += WITHOUT_KEYS_NOTE
    for item in document["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and "responses" in op:
                op.pop("security", None)
                op["responses"].pop("401", None)
    return document


def openapi_document(keys_enabled: bool = True) -> Json:
    """The description as a server with API keys (or without) answers; a fresh copy:
    callers (tests, fuzzers) may change theirs."""
    document = _document()
    return copy.deepcopy(document) if keys_enabled else _without_keys(document)
