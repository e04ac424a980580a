"""The meetings API: create, inspect, finalize, retry, transcript."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from server.admission import Admission
from server.auth import OWNER
from server.errors import ApiError, Errors
from server.json_body import read_json_object
from server.key_limits import LIMITS
from server.meeting_languages import LanguagePolicy
from storage.backlog import PENDING
from storage.field_rules import (
    MAX_TRACK_CHARS,
    MAX_TRACK_LABEL_CHARS,
    MAX_TRACKS,
    ascii_int,
    is_storable_text,
    is_track_label,
    is_track_name,
)
from storage.meeting_catalog import Cursor
from storage.meeting_completion import readiness
from storage.meeting_store import MeetingStore
from storage.models import Meeting
from storage.state_machine import ChunkState, MeetingState
from storage.track_languages import AUTO, LEGACY, track_language
from transcribe.transcript_formats import FORMATS, TranscriptLine, render

MAX_TITLE = 500
MAX_EXTERNAL_ID = 200


def _optional_str(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > limit
        or not is_storable_text(value)
    ):
        raise ApiError(
            Errors.INVALID_FIELD,
            f"{key} must be a non-empty string of <= {limit} characters, without NUL or "
            "unpaired surrogates",
        )
    return value


def _track_labels(body: dict[str, Any], tracks: list[str]) -> dict[str, str] | None:
    labels = body.get("track_labels")
    if labels is None:
        return None
    if (
        not isinstance(labels, dict)
        or len(labels) > MAX_TRACKS
        or not all(is_track_name(t) and is_track_label(v) for t, v in labels.items())
    ):
        raise ApiError(
            Errors.INVALID_FIELD,
            f"track_labels must be an object of up to {MAX_TRACKS} track names, each to a "
            f"label of 1 to {MAX_TRACK_LABEL_CHARS} printable characters, not all blank",
        )
    undeclared = sorted(t for t in labels if tracks and t not in tracks)
    if undeclared:
        raise ApiError(
            Errors.INVALID_FIELD, f"track_labels names tracks not declared: {undeclared}"
        )
    return dict(labels)


def _tracks(body: dict[str, Any]) -> list[str]:
    tracks = body.get("tracks", [])
    if (
        not isinstance(tracks, list)
        or len(tracks) > MAX_TRACKS
        # The rule a chunk's track must meet (storage/chunk_intake.py): a declared track no chunk
        # could name would keep its meeting waiting for ever.
        or not all(is_track_name(t) and t.strip() for t in tracks)
        or len(set(tracks)) != len(tracks)
    ):
        raise ApiError(
            Errors.INVALID_FIELD,
            f"tracks must be a list of up to {MAX_TRACKS} distinct, non-blank names of 1 to "
            f"{MAX_TRACK_CHARS} printable characters",
        )
    return tracks


def _known_tracks(meeting: Meeting, seen: Iterable[str]) -> list[str]:
    """The declared tracks, then any other track seen on a chunk or line (a meeting that
    declares none takes every track)."""
    return list(meeting.tracks) + sorted(set(seen) - set(meeting.tracks))


DEFAULT_PAGE = 20
MAX_PAGE = 100


def _cursor_text(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(f"{cursor.created_at!r}|{cursor.id}".encode()).decode()


def _cursor(text: str) -> Cursor:
    """A page's `next`, as the previous answer gave it."""
    bad = ApiError(Errors.INVALID_FIELD, "after must be a `next` from a meetings page")
    try:
        created, _, meeting_id = base64.urlsafe_b64decode(text.encode()).decode().partition("|")
        cursor = Cursor(float(created), meeting_id)
    except (ValueError, UnicodeError):
        raise bad from None
    nan = cursor.created_at != cursor.created_at
    if not meeting_id or not is_storable_text(meeting_id) or nan:
        raise bad
    return cursor


class MeetingsApi:
    def __init__(
        self,
        meetings: MeetingStore,
        admission: Admission,
        workers: int,
        languages: LanguagePolicy,
        upload_prefix: str = "/files/",
        max_missing_chunks: int = 1000,
    ) -> None:
        self.languages = languages
        self.max_missing_chunks = max_missing_chunks
        self.meetings = meetings
        self.admission = admission
        self.workers = workers
        self.upload_prefix = upload_prefix

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/meetings", self.create),
            web.get("/meetings", self.list),
            web.get("/meetings/{meeting_id}", self.show),
            web.delete("/meetings/{meeting_id}", self.delete),
            web.post("/meetings/{meeting_id}/finalize", self.finalize),
            web.get("/meetings/{meeting_id}/transcript", self.transcript),
            web.post("/meetings/{meeting_id}/chunks/{track}/{seq}/retry", self.retry),
        ]

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        title = _optional_str(body, "title", MAX_TITLE)
        external_id = _optional_str(body, "external_id", MAX_EXTERNAL_ID)
        tracks = _tracks(body)
        track_labels = _track_labels(body, tracks)
        language = self.languages.meeting_language(body)
        track_languages = self.languages.track_languages(body, tracks)
        owner = request[OWNER]
        if external_id is not None:
            existing = await self.meetings.by_external_id(owner, external_id)
            if existing is not None:
                return web.json_response(await self.view(existing, owner), status=200)
        await self.admission.check_new_meeting()
        meeting_id, created = await self.meetings.create(
            meeting_id="m_" + secrets.token_urlsafe(16),
            owner=owner,
            title=title,
            external_id=external_id,
            tracks=tracks,
            track_labels=track_labels,
            language=language,
            track_languages=track_languages,
            max_open_meetings=request[LIMITS].max_open_meetings,
        )
        return web.json_response(await self.view(meeting_id, owner), status=201 if created else 200)

    async def list(self, request: web.Request) -> web.Response:
        """The caller's meetings, newest first, `limit` a page (`after`: the previous page's
        `next`), optionally only those in one `state`."""
        query = request.query
        limit = ascii_int(query.get("limit", str(DEFAULT_PAGE)), MAX_PAGE)
        if limit is None or limit < 1:
            raise ApiError(Errors.INVALID_FIELD, f"limit must be an integer from 1 to {MAX_PAGE}")
        state = query.get("state")
        if state is not None and state not in {s.value for s in MeetingState}:
            raise ApiError(
                Errors.INVALID_FIELD,
                f"state must be one of {sorted(s.value for s in MeetingState)}, got {state[:40]!r}",
            )
        after = _cursor(query["after"]) if "after" in query else None
        page = await self.meetings.page(request[OWNER], state, limit, after)
        last = page[-1] if len(page) == limit else None
        return web.json_response(
            {
                "meetings": [vars(m) for m in page],
                "next": _cursor_text(Cursor(last.created_at, last.id)) if last else None,
            }
        )

    async def delete(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        chunks = await self.meetings.delete(meeting_id, request[OWNER])
        return web.json_response({"deleted": meeting_id, "chunks": chunks})

    async def view(self, meeting_id: str, owner: str) -> dict[str, Any]:
        record = await self.meetings.record(meeting_id, owner)
        meeting, rows = record.meeting, record.chunks
        chunks = [chunk for chunk, _ in rows]
        ready = readiness(meeting, chunks)
        pending_audio = sum(c.duration_s or 0.0 for c in chunks if c.state in PENDING)
        position = record.queue_position
        return {
            "id": meeting.id,
            "external_id": meeting.external_id,
            "title": meeting.title,
            "tracks": meeting.tracks,
            "track_labels": meeting.track_labels or {},
            "language": meeting.language or LEGACY,
            "track_languages": meeting.track_languages or {},
            # Each track's language as its jobs use it: asked for, or detected once.
            "languages": {
                track: vars(track_language(meeting, track))
                for track in _known_tracks(meeting, (c.track for c in chunks))
            },
            "state": meeting.state,
            "last_seq": meeting.last_seq,
            "error": meeting.error,
            "created_at": meeting.created_at,
            "finalized_at": meeting.finalized_at,
            "completed_at": meeting.completed_at,
            "waiting_for": ready.pending if meeting.last_seq is not None else [],
            "progress": {
                "lag_audio_s": round(pending_audio, 3),
                "queue_position": position,
                # Rough: this meeting's audio plus one job of each meeting served before it.
                "eta_s": round(
                    (pending_audio + (position or 0) * 30.0)
                    * record.recent_rtf
                    / max(1, self.workers),
                    1,
                ),
            },
            "missing": ready.missing,
            "gaps": [{"track": t, "seq": s} for t, s in meeting.gaps or []],
            "chunks": [
                {
                    "track": chunk.track,
                    "seq": chunk.seq,
                    "start_ms": chunk.start_ms,
                    "state": chunk.state,
                    "error": chunk.error,
                    "bytes": upload.offset,
                    "length": upload.length,
                    "duration_s": chunk.duration_s,
                    "attempts": chunk.attempts,
                    "transcribed_at": chunk.transcribed_at,
                    "worker": chunk.lease_owner if chunk.state == ChunkState.TRANSCRIBING else None,
                    "upload_url": f"{self.upload_prefix}{upload.id}",
                }
                for chunk, upload in rows
            ],
        }

    async def progress(self, meeting_id: str, owner: str) -> dict[str, Any]:
        view = await self.view(meeting_id, owner)
        return {"state": view["state"], **view["progress"]}

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response(await self.view(request.match_info["meeting_id"], request[OWNER]))

    async def finalize(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        body = await read_json_object(request)
        last_seq = body.get("last_seq")
        if not isinstance(last_seq, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in last_seq.items()
        ):
            raise ApiError(
                Errors.INVALID_FIELD,
                'last_seq must be an object {"<track>": <last seq, an integer >= 0>}',
            )
        await self.meetings.finalize(meeting_id, request[OWNER], last_seq, self.max_missing_chunks)
        return web.json_response(await self.view(meeting_id, request[OWNER]))

    async def retry(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        track = request.match_info["track"]
        seq = ascii_int(request.match_info["seq"])
        if seq is None:
            raise ApiError(Errors.INVALID_FIELD, "seq must be a non-negative integer")
        await self.meetings.retry_chunk(meeting_id, request[OWNER], track, seq)
        return web.json_response(await self.view(meeting_id, request[OWNER]), status=202)

    async def transcript(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        fmt = request.query.get("format", "json")
        if fmt not in FORMATS:
            raise ApiError(Errors.INVALID_FORMAT, f"got {fmt!r}")
        record = await self.meetings.transcript(meeting_id, request[OWNER])
        meeting = record.meeting
        gaps = [
            {"track": c.track, "seq": c.seq, "state": c.state, "reason": c.error}
            for c in record.unusable
        ]
        gaps += [
            {"track": t, "seq": s, "state": "missing", "reason": "never uploaded"}
            for t, s in meeting.gaps or []
        ]
        labels = meeting.track_labels or {}
        languages = {
            track: language
            for track in _known_tracks(meeting, (s.track for s in record.segments))
            if (language := track_language(meeting, track).language) != AUTO
        }
        lines = [
            TranscriptLine(
                s.start_ms, s.end_ms, s.track, s.text, s.words or [], labels.get(s.track)
            )
            for s in record.segments
        ]
        body = render(
            lines,
            fmt,
            meeting_id=meeting_id,
            final=meeting.state == MeetingState.COMPLETE,
            gaps=gaps,
            languages=languages,
        )
        return web.Response(text=body, headers={"Content-Type": FORMATS[fmt]})
