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

from server.api_description.components import HEADERS, SCHEMAS
from server.api_description.meetings import meeting_paths
from server.api_description.operations import ops_paths
from server.api_description.parts import Json
from server.api_description.tus import tus_paths
from server.api_description.webhooks import webhook_paths
from server.errors import TUS_VERSION
from server.tus.handler import EXTENSIONS

# aiohttp registers HEAD beside every web.get() (allow_head); those answer as GET without a
# body and are not described one by one. The tus HEAD is its own route and is described.

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
        "paths": {**tus_paths(), **meeting_paths(), **webhook_paths(), **ops_paths()},
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
