"""The meetings API: create, inspect, finalize, retry, transcript."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from server.admission import Admission
from server.auth import OWNER
from server.errors import ApiError, Errors
from server.json_body import read_json_object
from server.key_limits import LIMITS, check_open_meetings
from server.params import (
    MAX_TRACK_CHARS,
    MAX_TRACK_LABEL_CHARS,
    ascii_int,
    is_track_label,
    is_track_name,
)
from storage.backlog import PENDING, queue_position, recent_rtf
from storage.blob_store import BlobStore
from storage.database import Database
from storage.job_queue import requeue_failed
from storage.meeting_catalog import Cursor, MeetingBusy, delete_meeting, list_meetings
from storage.models import Chunk, Meeting, Segment, Upload
from storage.state_machine import (
    ChunkState,
    MeetingState,
    StaleState,
    new_meeting,
    transition_meeting,
)
from storage.upload_store import UploadStore
from transcribe.assembly import assemble_if_ready, readiness
from transcribe.transcript_formats import FORMATS, TranscriptLine, render

MAX_TRACKS = 64
MAX_TITLE = 500
MAX_EXTERNAL_ID = 200


def _optional_str(body: dict[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ApiError(Errors.INVALID_FIELD, f"{key} must be a non-empty string of <= {limit}")
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
        # The rule a chunk's track must meet (server/ingest.py): a declared track no chunk
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
    if not meeting_id or cursor.created_at != cursor.created_at:  # NaN
        raise bad
    return cursor


class MeetingsApi:
    def __init__(
        self,
        db: Database,
        admission: Admission,
        workers: int,
        upload_prefix: str = "/files/",
        max_missing_chunks: int = 1000,
        blobs: BlobStore | None = None,
    ) -> None:
        self.max_missing_chunks = max_missing_chunks
        self.blobs = blobs
        self.db = db
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

    async def _meeting(self, session: Any, meeting_id: str, owner: str) -> Meeting:
        meeting = await session.get(Meeting, meeting_id)
        # Another key's meeting is not found, not forbidden: its existence stays private.
        if meeting is None or meeting.owner != owner:
            raise ApiError(Errors.MEETING_NOT_FOUND, meeting_id)
        return meeting

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        title = _optional_str(body, "title", MAX_TITLE)
        external_id = _optional_str(body, "external_id", MAX_EXTERNAL_ID)
        tracks = _tracks(body)
        track_labels = _track_labels(body, tracks)
        owner = request[OWNER]
        if external_id is not None:
            existing = await self._by_external_id(owner, external_id)
            if existing is not None:
                return web.json_response(await self.view(existing, owner), status=200)
        await self.admission.check_new_meeting()
        meeting_id = "m_" + secrets.token_urlsafe(16)
        try:
            async with self.db.write() as session:
                # In the inserting transaction: the count cannot go stale before the insert.
                await check_open_meetings(session, owner, request[LIMITS])
                session.add(
                    new_meeting(
                        meeting_id=meeting_id,
                        external_id=external_id,
                        title=title,
                        tracks=tracks,
                        owner=owner,
                        track_labels=track_labels,
                    )
                )
        except IntegrityError:
            # Two creations with one external_id raced: the first one is the meeting.
            assert external_id is not None
            existing = await self._by_external_id(owner, external_id)
            assert existing is not None
            return web.json_response(await self.view(existing, owner), status=200)
        return web.json_response(await self.view(meeting_id, owner), status=201)

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
        async with self.db.read() as session:
            page = await list_meetings(session, request[OWNER], state, limit, after)
        last = page[-1] if len(page) == limit else None
        return web.json_response(
            {
                "meetings": [vars(m) for m in page],
                "next": _cursor_text(Cursor(last.created_at, last.id)) if last else None,
            }
        )

    async def delete(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        try:
            async with self.db.write() as session:
                gone = await delete_meeting(session, meeting_id, request[OWNER])
        except MeetingBusy as busy:
            chunks = ", ".join(f"{c['track']}/{c['seq']} {c['state']}" for c in busy.chunks[:10])
            raise ApiError(Errors.MEETING_BUSY, chunks) from None
        if gone is None:
            raise ApiError(Errors.MEETING_NOT_FOUND, meeting_id)
        # Committed: the bytes go now. Should this process die first, the uploads have
        # expired and the expiry sweep deletes them.
        if self.blobs is not None:
            uploads = UploadStore(self.db)
            for upload_id in gone.upload_ids:
                await self.blobs.delete(upload_id)
                await uploads.mark_terminated(upload_id, time.time())
            for name in gone.carry_names:
                await self.blobs.delete_carry(name)
        return web.json_response({"deleted": meeting_id, "chunks": len(gone.upload_ids)})

    async def _by_external_id(self, owner: str, external_id: str) -> str | None:
        async with self.db.read() as session:
            return (
                await session.execute(
                    select(Meeting.id).where(
                        Meeting.owner == owner, Meeting.external_id == external_id
                    )
                )
            ).scalar_one_or_none()

    async def view(self, meeting_id: str, owner: str) -> dict[str, Any]:
        async with self.db.read() as session:
            meeting = await self._meeting(session, meeting_id, owner)
            rows = (
                await session.execute(
                    select(Chunk, Upload)
                    .join(Upload, Upload.id == Chunk.upload_id)
                    .where(Chunk.meeting_id == meeting_id)
                    .order_by(Chunk.track, Chunk.seq)
                )
            ).all()
            now = time.time()
            position = await queue_position(session, meeting_id, now)
            rtf = await recent_rtf(session)
        chunks = [chunk for chunk, _ in rows]
        ready = readiness(meeting, chunks)
        pending_audio = sum(c.duration_s or 0.0 for c in chunks if c.state in PENDING)
        return {
            "id": meeting.id,
            "external_id": meeting.external_id,
            "title": meeting.title,
            "tracks": meeting.tracks,
            "track_labels": meeting.track_labels or {},
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
                    (pending_audio + (position or 0) * 30.0) * rtf / max(1, self.workers), 1
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
                    "worker": chunk.lease_owner
                    if chunk.state == ChunkState.TRANSCRIBING.value
                    else None,
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
        async with self.db.write() as session:
            meeting = await self._meeting(session, meeting_id, request[OWNER])
            if meeting.last_seq is not None:
                if meeting.last_seq != last_seq:
                    raise ApiError(
                        Errors.FINALIZE_CONFLICT, f"finalized with last_seq {meeting.last_seq}"
                    )
            else:
                await self._check_last_seq(session, meeting, last_seq)
                try:
                    await transition_meeting(
                        session,
                        meeting,
                        MeetingState.FINALIZING,
                        event="meeting.finalizing",
                        payload={"last_seq": last_seq},
                        last_seq=last_seq,
                        finalized_at=time.time(),
                    )
                except StaleState:
                    pass
        await assemble_if_ready(self.db, meeting_id)
        return web.json_response(await self.view(meeting_id, request[OWNER]))

    async def _check_last_seq(
        self, session: Any, meeting: Meeting, last_seq: dict[str, int]
    ) -> None:
        unknown = [t for t in last_seq if meeting.tracks and t not in meeting.tracks]
        if unknown:
            raise ApiError(Errors.UNKNOWN_TRACK, f"{unknown}; declared: {meeting.tracks}")
        chunks = (
            await session.execute(
                select(Chunk.track, Chunk.seq).where(Chunk.meeting_id == meeting.id)
            )
        ).all()
        beyond = [
            {"track": track, "seq": seq}
            for track, seq in chunks
            if track not in last_seq or seq > last_seq[track]
        ]
        if beyond:
            raise ApiError(
                Errors.INVALID_FIELD,
                f"chunks exist past the given last_seq: {beyond[:10]}",
            )
        # A finalize may come before the last chunks (a client that finalizes, then drains
        # its spool), but it can only name chunks a client could still send: waiting for
        # 10**30 of them would make every readiness check (and the sweep after a restart)
        # count to 10**30.
        arrived = len(chunks)  # all at or below last_seq, as just checked
        missing = sum(last + 1 for last in last_seq.values()) - arrived
        if missing > self.max_missing_chunks:
            raise ApiError(
                Errors.INVALID_FIELD,
                f"last_seq names {missing} chunks that have not arrived; at most "
                f"{self.max_missing_chunks} may still be missing at finalize "
                "(--max-missing-chunks)",
            )

    async def retry(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        track = request.match_info["track"]
        seq = ascii_int(request.match_info["seq"])
        if seq is None:
            raise ApiError(Errors.INVALID_FIELD, "seq must be a non-negative integer")
        async with self.db.write() as session:
            await self._meeting(session, meeting_id, request[OWNER])
            chunk = (
                await session.execute(
                    select(Chunk).where(
                        Chunk.meeting_id == meeting_id,
                        Chunk.track == track,
                        Chunk.seq == seq,
                    )
                )
            ).scalar_one_or_none()
            if chunk is None:
                raise ApiError(Errors.CHUNK_NOT_FOUND, f"{track}/{seq}")
            if chunk.state != ChunkState.FAILED.value:
                raise ApiError(Errors.NOT_RETRYABLE, f"chunk is {chunk.state}")
            await requeue_failed(session, chunk)
        return web.json_response(await self.view(meeting_id, request[OWNER]), status=202)

    async def transcript(self, request: web.Request) -> web.Response:
        meeting_id = request.match_info["meeting_id"]
        fmt = request.query.get("format", "json")
        if fmt not in FORMATS:
            raise ApiError(Errors.INVALID_FORMAT, f"got {fmt!r}")
        async with self.db.read() as session:
            meeting = await self._meeting(session, meeting_id, request[OWNER])
            segments = (
                (
                    await session.execute(
                        select(Segment)
                        .where(Segment.meeting_id == meeting_id)
                        .order_by(Segment.start_ms, Segment.track, Segment.id)
                    )
                )
                .scalars()
                .all()
            )
            gaps = [
                {"track": c.track, "seq": c.seq, "state": c.state, "reason": c.error}
                for c in (
                    await session.execute(
                        select(Chunk).where(
                            Chunk.meeting_id == meeting_id,
                            Chunk.state.in_([ChunkState.REJECTED.value, ChunkState.FAILED.value]),
                        )
                    )
                ).scalars()
            ]
        gaps += [
            {"track": t, "seq": s, "state": "missing", "reason": "never uploaded"}
            for t, s in meeting.gaps or []
        ]
        labels = meeting.track_labels or {}
        lines = [
            TranscriptLine(
                s.start_ms, s.end_ms, s.track, s.text, s.words or [], labels.get(s.track)
            )
            for s in segments
        ]
        body = render(
            lines,
            fmt,
            meeting_id=meeting_id,
            final=meeting.state == MeetingState.COMPLETE.value,
            gaps=gaps,
        )
        return web.Response(text=body, headers={"Content-Type": FORMATS[fmt]})
