"""Uploads a spool's closed segments into its meeting with tuspy, and creates and finalizes
the meeting: the part the desktop recorder and the Discord bot share.

It never gives up and never dies silently: network trouble and the server's temporary
answers (408, 423, 429, 5xx) are retried with backoff, said once per outage; an upload the
server no longer has (404/410, expired) is created again; a segment the server refuses for
good (another 4xx) is set aside as failed, said, and the rest go on (the server records a
gap where it belonged). A segment's file is deleted only once the server has every byte.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from client.spool import SegmentState, Spool, SpoolState

TUS_CHUNK = 4 * 1024 * 1024
NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, TusCommunicationError)
TEMPORARY_STATUSES = {408, 423, 425, 429}
# The 409s a retry resolves (the retry asks the server for its offset first); the others
# (a finalized or complete meeting, a conflicting chunk) stay true however often one asks.
TEMPORARY_CONFLICTS = ("ERR_MISMATCHED_OFFSET", "ERR_UPLOAD_TAKEN_OVER")
GONE_STATUSES = {404, 410}
MAX_BACKOFF_S = 10.0
T = TypeVar("T")


class RefusedSegment(Exception):
    """The server refused a segment for good."""


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, TusCommunicationError):
        return exc.status_code
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code
    return None


def refusal(exc: BaseException) -> str:
    """What the server said when it refused: its status, error code and message."""
    status = _status(exc)
    try:
        error = json.loads(_body(exc))["error"]
        return f"{status} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{status} {_body(exc)}".strip()


def is_temporary(exc: BaseException) -> bool:
    """Worth retrying: no answer at all, or an answer that says "later"."""
    status = _status(exc)
    if status == 409:
        return any(code in _body(exc) for code in TEMPORARY_CONFLICTS)
    return status is None or status >= 500 or status in TEMPORARY_STATUSES


class SpoolUploader:
    def __init__(
        self,
        spool: Spool,
        state: SpoolState,
        lock: threading.Lock,
        say: Callable[[str], None],
        note: Callable[[str], None] = lambda _text: None,
        api_key: str | None = None,
        on_uploaded: Callable[[SegmentState], None] = lambda _segment: None,
    ) -> None:
        self.spool = spool
        self.state = state
        self.lock = lock
        self.say = say
        self.note = note
        self.on_uploaded = on_uploaded
        self.server = state.server.rstrip("/")
        self.headers: dict[str, str] = {}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.session = requests.Session()
        self.session.headers.update(self.headers)
        self.wake = threading.Event()  # a segment closed: upload it
        self.failures = 0  # attempts that failed, for status displays and tests
        self.sleep = time.sleep  # between retries (a test counts long outages instead)

    # ---- retrying ------------------------------------------------------------------------

    def with_backoff(self, action: Callable[[], T], give_up: Callable[[], bool] = bool) -> T:
        """`action()` until it succeeds. Temporary failures are retried with backoff (said
        once per outage, then shown as a note); `give_up()` turning true re-raises instead;
        a permanent refusal is raised at once."""
        delay = 0.5
        said = False
        while True:
            try:
                result = action()
            except (*NETWORK_ERRORS, requests.HTTPError) as exc:
                if not is_temporary(exc) or give_up():
                    raise
                self.failures += 1
                reason = _status(exc) or type(exc).__name__
                if not said:
                    self.say(f"server unreachable or busy ({reason}); retrying until it answers")
                    said = True
                self.note(f"server unreachable ({reason}), retrying in {delay:.0f} s")
                self.sleep(delay)
                delay = min(MAX_BACKOFF_S, delay * 2)
            else:
                if said:
                    self.say("server reachable again")
                    self.note("")
                return result

    def save(self) -> None:
        with self.lock:
            self.spool.save(self.state)

    # ---- the meeting ---------------------------------------------------------------------

    def ensure_meeting(self, body: dict[str, Any]) -> str:
        """The spool's meeting, created once (the external id makes a retried or repeated
        creation answer with the same meeting)."""
        if self.state.meeting_id is None:
            body = {"external_id": self.state.external_id, **body}
            if self.state.title:
                body.setdefault("title", self.state.title)
            if self.state.language:
                body.setdefault("language", self.state.language)

            def create() -> str:
                r = self.session.post(f"{self.server}/meetings", json=body, timeout=30)
                r.raise_for_status()
                return str(r.json()["id"])

            self.state.meeting_id = self.with_backoff(create)
            self.save()
        return self.state.meeting_id

    def finalize(self, last_seq: dict[str, int]) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            r = self.session.post(
                f"{self.server}/meetings/{self.state.meeting_id}/finalize",
                json={"last_seq": last_seq},
                timeout=30,
            )
            r.raise_for_status()
            return dict(r.json())

        view = self.with_backoff(call)
        self.state.finalized = True
        self.save()
        return view

    def get_json(self, path: str, timeout: float = 30) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            r = self.session.get(f"{self.server}{path}", timeout=timeout)
            r.raise_for_status()
            return dict(r.json())

        return self.with_backoff(call)

    def get_text(self, path: str, params: dict[str, str]) -> str:
        def call() -> str:
            r = self.session.get(f"{self.server}{path}", params=params, timeout=30)
            r.raise_for_status()
            return r.text

        return self.with_backoff(call)

    # ---- segments ------------------------------------------------------------------------

    def forget_uploaded_files(self) -> None:
        """A crash between marking a segment uploaded and deleting its file leaves the file
        behind; the server holds all of it, so it goes."""
        with self.lock:
            done = [s.path for s in self.state.segments if s.uploaded or s.failed]
        for path in done:
            Path(path).unlink(missing_ok=True)

    def pending(self) -> list[SegmentState]:
        with self.lock:
            return [s for s in self.state.segments if not s.uploaded and not s.failed]

    def upload_pending(self, give_up: Callable[[], bool] = bool) -> None:
        """Every closed segment not yet on the server, in the order they closed."""
        for segment in self.pending():
            try:
                self.with_backoff(lambda s=segment: self._upload(s), give_up)
            except RefusedSegment as exc:
                self._set_aside(segment, str(exc))
            except (*NETWORK_ERRORS, requests.HTTPError) as exc:
                if is_temporary(exc):
                    raise  # give_up() said so
                self._set_aside(segment, f"{_status(exc)} {_body(exc)}")

    def run(self, more_to_come: Callable[[], bool]) -> None:
        """Uploads as segments close until nothing is pending and `more_to_come()` is false.
        Anything unexpected is said with its reason and retried after a pause: this loop
        only ends when its work is done."""
        self.forget_uploaded_files()
        while True:
            try:
                self.upload_pending()
            except Exception as exc:  # a bug or a full disk: say it, keep the spool, go on
                self.failures += 1
                self.say(f"uploading failed unexpectedly ({type(exc).__name__}: {exc}); retrying")
                self.sleep(MAX_BACKOFF_S)
                continue
            # Asked in this order: a segment that closes just before the recording ends is
            # seen by the second pending().
            if not self.pending() and not more_to_come() and not self.pending():
                return
            self.wake.wait(0.5)
            self.wake.clear()

    def _set_aside(self, segment: SegmentState, reason: str) -> None:
        self.say(
            f"the server refused {segment.track} segment {segment.seq} for good ({reason}); "
            "it is kept in the spool as failed and the meeting will show a gap there"
        )
        with self.lock:
            segment.failed = reason[:500]
            self.spool.save(self.state)

    def _metadata(self, segment: SegmentState) -> dict[str, str]:
        meta = {
            "meeting_id": self.state.meeting_id or "",
            "track": segment.track,
            "seq": str(segment.seq),
            "start_ms": str(segment.start_ms),
            "filename": Path(segment.path).name,
            "filetype": "audio/ogg",
        }
        track = self.state.tracks.get(segment.track)
        if track is not None and track.label:
            meta["track_label"] = track.label
        return meta

    def _upload(self, segment: SegmentState) -> None:
        if not Path(segment.path).exists():
            raise RefusedSegment("its file is missing from the spool")
        client = tus_client.TusClient(f"{self.server}/files/", headers=self.headers)
        if segment.upload_url is not None:
            uploader = client.uploader(
                segment.path, url=segment.upload_url, chunk_size=TUS_CHUNK, retries=0
            )
            try:
                uploader.offset = uploader.get_offset()
            except TusCommunicationError as exc:
                if exc.status_code not in GONE_STATUSES:
                    raise
                # The server expired or lost the unfinished upload: start it again.
                with self.lock:
                    segment.upload_url = None
                    self.spool.save(self.state)
        if segment.upload_url is None:
            uploader = client.uploader(
                segment.path, metadata=self._metadata(segment), chunk_size=TUS_CHUNK, retries=0
            )
            url = uploader.create_url()
            with self.lock:
                segment.upload_url = url
                self.spool.save(self.state)
            uploader.set_url(url)
            uploader.offset = 0
        uploader.upload()
        with self.lock:
            segment.uploaded = True
            segment.uploaded_at = time.time()
            self.spool.save(self.state)
        Path(segment.path).unlink(missing_ok=True)
        self.on_uploaded(segment)


def _body(exc: BaseException) -> str:
    if isinstance(exc, TusCommunicationError) and exc.response_content:
        content = exc.response_content
        text = content.decode(errors="replace") if isinstance(content, bytes) else str(content)
        return text[:300]
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.text[:300]
    return ""
