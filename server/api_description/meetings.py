"""The meetings routes: create, show, finalize, transcript, retry, events (SSE)."""

from __future__ import annotations

from server.api_description.parts import (
    BODY_TOO_LARGE,
    BODY_TOO_SLOW,
    DATABASE_UNAVAILABLE,
    HOST_REFUSED,
    PATH_NAMES_NOTHING,
    Json,
    error_answer,
    header_param,
    json_body,
    json_content,
    operation,
    path_param,
    ref,
    response_headers,
)
from storage.state_machine import MeetingState
from transcribe.transcript_formats import FORMATS

MEETING_STATES = sorted(s.value for s in MeetingState)

MEETING_ID = path_param("meeting_id", "The meeting's id (`m_...`), as its creation answered.")
MEETING_NOT_FOUND = error_answer(
    "ERR_MEETING_NOT_FOUND: no such meeting (or another key's)." + PATH_NAMES_NOTHING
)


def meeting_paths() -> Json:
    meeting_ok = {"description": "The meeting.", "content": json_content(ref("schemas", "Meeting"))}
    return {
        "/meetings": {
            "post": operation(
                "createMeeting",
                "Create a meeting (idempotent on external_id)",
                {
                    "200": {
                        "description": "The existing meeting with this external_id.",
                        "content": json_content(ref("schemas", "Meeting")),
                    },
                    "201": {
                        "description": "Created.",
                        "content": json_content(ref("schemas", "Meeting")),
                    },
                    "400": error_answer(
                        "ERR_INVALID_JSON, ERR_INVALID_FIELD, or ERR_LANGUAGE_NOT_IN_MODEL (a "
                        "language the server's English-only model cannot transcribe)."
                    ),
                    "403": error_answer(
                        f"{HOST_REFUSED} Or ERR_OPEN_MEETINGS_LIMIT: the key has as many "
                        "meetings recording as --max-open-meetings-per-key allows."
                    ),
                    "408": BODY_TOO_SLOW,
                    "413": BODY_TOO_LARGE,
                    "503": error_answer(
                        "ERR_BACKLOG_FULL: the transcription backlog is over its limit. Or "
                        + DATABASE_UNAVAILABLE,
                        {"Retry-After": ref("headers", "Retry-After")},
                    ),
                },
                tags=["meetings"],
                body=json_body("MeetingCreate", required=False),
            ),
            "get": operation(
                "listMeetings",
                "The caller's meetings, newest first, a page at a time",
                {
                    "200": {
                        "description": "A page; `next` (null on the last page) asks for the "
                        "one after it as `after`.",
                        "content": json_content(ref("schemas", "MeetingPage")),
                    },
                    "400": error_answer("ERR_INVALID_FIELD: limit, state or after."),
                },
                tags=["meetings"],
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    },
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": MEETING_STATES},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "The `next` of the previous page.",
                        "schema": {"type": "string"},
                    },
                ],
            ),
        },
        "/meetings/{meeting_id}": {
            "parameters": [MEETING_ID],
            "get": operation(
                "getMeeting",
                "A meeting: state, chunks, progress, gaps",
                {"200": meeting_ok, "404": MEETING_NOT_FOUND},
                tags=["meetings"],
            ),
            "delete": operation(
                "deleteMeeting",
                "Delete a meeting: its audio, transcript, chunks and events",
                {
                    "200": {
                        "description": "Deleted; `meeting.deleted` is sent to webhooks.",
                        "content": json_content(
                            {
                                "type": "object",
                                "required": ["deleted", "chunks"],
                                "properties": {
                                    "deleted": {"type": "string"},
                                    "chunks": {"type": "integer", "minimum": 0},
                                },
                            }
                        ),
                    },
                    "404": MEETING_NOT_FOUND,
                    "409": error_answer(
                        "ERR_MEETING_BUSY: a chunk is being uploaded or transcribed; the "
                        "message names them."
                    ),
                },
                tags=["meetings"],
            ),
        },
        "/meetings/{meeting_id}/finalize": {
            "parameters": [MEETING_ID],
            "post": operation(
                "finalizeMeeting",
                "Declare the last seq of each track (idempotent with the same last_seq)",
                {
                    "200": meeting_ok,
                    "400": error_answer(
                        "ERR_INVALID_JSON, ERR_INVALID_FIELD (also: chunks exist past last_seq, "
                        "or too many chunks still missing) or ERR_UNKNOWN_TRACK."
                    ),
                    "404": MEETING_NOT_FOUND,
                    "409": error_answer(
                        "ERR_FINALIZE_CONFLICT: finalized before with another last_seq."
                    ),
                    "408": BODY_TOO_SLOW,
                    "413": BODY_TOO_LARGE,
                },
                tags=["meetings"],
                body=json_body("Finalize", required=True),
            ),
        },
        "/meetings/{meeting_id}/transcript": {
            "parameters": [MEETING_ID],
            "get": operation(
                "getTranscript",
                "The transcript so far (final once the meeting is complete)",
                {
                    "200": {
                        "description": "The transcript in the asked format.",
                        "content": {
                            FORMATS["json"]: {"schema": ref("schemas", "Transcript")},
                            **{
                                FORMATS[f].split(";")[0]: {"schema": {"type": "string"}}
                                for f in FORMATS
                                if f != "json"
                            },
                        },
                    },
                    "400": error_answer("ERR_INVALID_FORMAT"),
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
                path_param("track", "The chunk's track."),
                path_param(
                    "seq",
                    "The chunk's seq (ASCII digits).",
                    {"type": "string", "pattern": "^[0-9]{1,10}$"},
                ),
            ],
            "post": operation(
                "retryChunk",
                "Queue a failed chunk for transcription again",
                {
                    "202": {
                        "description": "Queued again; the meeting.",
                        "content": json_content(ref("schemas", "Meeting")),
                    },
                    "400": error_answer("ERR_INVALID_FIELD: seq is not an integer."),
                    "404": error_answer(
                        "ERR_MEETING_NOT_FOUND or ERR_CHUNK_NOT_FOUND." + PATH_NAMES_NOTHING
                    ),
                    "409": error_answer("ERR_NOT_RETRYABLE: only a failed chunk can be retried."),
                },
                tags=["meetings"],
            ),
        },
        "/meetings/{meeting_id}/events": {
            "parameters": [MEETING_ID],
            "get": operation(
                "meetingEvents",
                "Server-Sent Events of the meeting, with Last-Event-ID replay",
                {
                    "200": {
                        "description": "An endless `text/event-stream` (until=complete: until "
                        "meeting.completed or meeting.failed). Each logged event has `id:`, "
                        "`event:` (its type) and `data:` (JSON); `meeting.progress` events "
                        "(lag, queue position, ETA) carry no id and are not replayed.",
                        "headers": response_headers("Cache-Control"),
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": error_answer("ERR_INVALID_FIELD: Last-Event-ID is not an event id."),
                    "404": MEETING_NOT_FOUND,
                },
                tags=["meetings"],
                parameters=[
                    header_param(
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
