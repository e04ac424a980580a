"""Shared schemas (the error body, meetings, webhooks, ...) and response headers."""

from __future__ import annotations

from server.api_description.parts import (
    Json,
    ref,
)
from server.errors import TUS_VERSION, ErrorKind, Errors
from server.tus.handler import EXTENSIONS
from server.tus.headers import CHECKSUM_ALGORITHMS
from server.webhooks_api import EVENT_TYPES
from storage.field_rules import MAX_DB_INT, MAX_TRACK_CHARS, MAX_TRACK_LABEL_CHARS

# Every named error code (server/errors.py), listed in the Error schema.
ERROR_CODES = sorted({v.code for v in vars(Errors).values() if isinstance(v, ErrorKind)})
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NON_BLANK = "\\S"
# storage/field_rules.py's is_storable_text.
STORABLE_TEXT = "Any text but NUL (U+0000) and unpaired surrogates (400 ERR_INVALID_FIELD)."

# storage/field_rules.py's is_track_name, as near as a pattern gets: printable is Python's
# str.isprintable (no control, format or separator characters but the space).
TRACK_NAME: Json = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_TRACK_CHARS,
    "allOf": [{"pattern": NON_BLANK}, {"pattern": "^[^\\x00-\\x1f\\x7f-\\xa0]+$"}],
    "description": "1 to 200 printable characters, not all blank.",
}

# storage/field_rules.py's is_track_label, as near as a pattern gets.
TRACK_LABEL: Json = {
    **TRACK_NAME,
    "maxLength": MAX_TRACK_LABEL_CHARS,
    "description": "1 to 100 printable characters, not all blank.",
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
            "title": {
                **NULLABLE_STR,
                "minLength": 1,
                "maxLength": 500,
                "pattern": NON_BLANK,
                "description": STORABLE_TEXT,
            },
            "external_id": {
                **NULLABLE_STR,
                "minLength": 1,
                "maxLength": 200,
                "pattern": NON_BLANK,
                "description": "The caller's own id: a second creation with it answers the "
                "first meeting (200). " + STORABLE_TEXT,
            },
            "tracks": {
                "type": "array",
                "maxItems": 64,
                "uniqueItems": True,
                "items": TRACK_NAME,
                "description": "The tracks chunks may name; none: any track.",
            },
            "track_labels": {
                "type": ["object", "null"],
                "maxProperties": 64,
                "additionalProperties": TRACK_LABEL,
                "description": "What transcripts show each track as (e.g. a speaker's name "
                "for a track named by a user id); keys must be declared tracks when `tracks` "
                "is given; null or absent: none. Chunks may set or change a label later "
                "(`track_label` metadata).",
            },
            "language": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": 16,
                "description": "The language the tracks are spoken in: `auto` (each track's "
                "is detected once, from its first speech, and kept) or one of the model's "
                "codes. Null or absent: the server's `--language` (`auto`, or `en` with an "
                "English-only model). An English-only model asked for another language: "
                "400 `ERR_LANGUAGE_NOT_IN_MODEL`.",
            },
            "track_languages": {
                "type": ["object", "null"],
                "maxProperties": 64,
                "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 16},
                "description": "A language (or `auto`) for tracks whose language differs "
                "from the meeting's; keys must be declared tracks when `tracks` is given.",
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
            "track_labels",
            "language",
            "track_languages",
            "languages",
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
            "track_labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "language": {"type": "string", "description": "`auto` or a language code."},
            "track_languages": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "The languages asked for per track at creation.",
            },
            "languages": {
                "type": "object",
                "description": "Each track's language as its transcription uses it: "
                "`source` says whether the meeting or the track asked for it or it was "
                "detected (then with the detector's `probability`); `auto` until a track's "
                "first speech.",
                "additionalProperties": {
                    "type": "object",
                    "required": ["language", "source", "probability"],
                    "properties": {
                        "language": {"type": "string"},
                        "source": {"type": "string", "enum": ["meeting", "track", "detected"]},
                        "probability": NULLABLE_NUM,
                    },
                },
            },
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
            "gaps": {"type": "array", "items": ref("schemas", "TrackSeq")},
            "chunks": {"type": "array", "items": ref("schemas", "Chunk")},
        },
    },
    "MeetingPage": {
        "type": "object",
        "required": ["meetings", "next"],
        "properties": {
            "meetings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "id",
                        "title",
                        "external_id",
                        "state",
                        "created_at",
                        "finalized_at",
                        "completed_at",
                        "tracks",
                        "track_labels",
                        "chunks",
                        "duration_s",
                    ],
                    "properties": {
                        "id": {"type": "string"},
                        "title": NULLABLE_STR,
                        "external_id": NULLABLE_STR,
                        "state": {"type": "string"},
                        "created_at": {"type": "number"},
                        "finalized_at": NULLABLE_NUM,
                        "completed_at": NULLABLE_NUM,
                        "tracks": {"type": "array", "items": {"type": "string"}},
                        "track_labels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "chunks": {"type": "integer", "minimum": 0},
                        "duration_s": {"type": "number", "minimum": 0},
                    },
                },
            },
            "next": NULLABLE_STR,
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
        "required": ["meeting_id", "final", "languages", "segments", "gaps"],
        "properties": {
            "meeting_id": {"type": "string"},
            "final": {"type": "boolean"},
            "languages": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Each track's language, where it is known.",
            },
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["start", "end", "track", "speaker", "text", "words"],
                    "properties": {
                        "start": {"type": "number"},
                        "end": {"type": "number"},
                        "track": {"type": "string"},
                        "speaker": {
                            "type": "string",
                            "description": "The track's label, or its name without one.",
                        },
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
        "properties": {"webhooks": {"type": "array", "items": ref("schemas", "Webhook")}},
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
    "Retry-After": _h("Seconds to wait before trying again.", _DIGITS_SCHEMA),
    **_OPTIONAL_HEADERS,
    **{
        name + "-optional": {**header, "required": False}
        for name, header in _OPTIONAL_HEADERS.items()
    },
}
