"""A tus upload that grows while it is written (Upload-Defer-Length), for live segments.

tuspy uploads files of known length, so a segment whose end is not known yet is sent with
plain requests: POST with Upload-Defer-Length, PATCHes of new pages as they come, and the
length declared on the last PATCH. Failures resume from the server's HEAD offset.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import requests

TUS = {"Tus-Resumable": "1.0.0"}


def encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())


class StreamingUpload:
    def __init__(
        self,
        session: requests.Session,
        endpoint: str,
        metadata: dict[str, str],
        retries: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.metadata = metadata
        self.retries = retries
        self.sleep = sleep
        self.url: str | None = None
        self.offset = 0  # acknowledged by the server
        self.pending = bytearray()  # not yet acknowledged
        self.total = 0

    def append(self, data: bytes) -> None:
        self.pending += data
        self.total += len(data)

    def _create(self) -> None:
        r = self.session.post(
            self.endpoint,
            headers={
                **TUS,
                "Upload-Defer-Length": "1",
                "Upload-Metadata": encode_metadata(self.metadata),
            },
            timeout=30,
        )
        if r.status_code != 201:
            raise requests.HTTPError(f"create failed: {r.status_code} {r.text}", response=r)
        self.url = requests.compat.urljoin(self.endpoint, r.headers["Location"])
        self.offset = int(r.headers.get("Upload-Offset", "0"))

    def _resync(self) -> None:
        assert self.url is not None
        r = self.session.head(self.url, headers=TUS, timeout=30)
        r.raise_for_status()
        server = int(r.headers["Upload-Offset"])
        del self.pending[: server - self.offset]
        self.offset = server

    def flush(self, final: bool = False) -> None:
        """Send what is pending; with `final`, declare the length (the segment closed)."""
        for attempt in range(self.retries + 1):
            try:
                if self.url is None:
                    self._create()
                if not self.pending and not final:
                    return
                headers = {
                    **TUS,
                    "Upload-Offset": str(self.offset),
                    "Content-Type": "application/offset+octet-stream",
                }
                if final:
                    headers["Upload-Length"] = str(self.total)
                r = self.session.patch(
                    self.url, data=bytes(self.pending), headers=headers, timeout=60
                )
                if r.status_code == 204:
                    self.offset = int(r.headers["Upload-Offset"])
                    self.pending.clear()
                    return
                if r.status_code not in (409, 423) and r.status_code < 500:
                    raise requests.HTTPError(f"PATCH refused: {r.status_code} {r.text}", response=r)
                self._resync()
            except (requests.ConnectionError, requests.Timeout):
                if attempt == self.retries:
                    raise
                self.sleep(min(30.0, 0.5 * 2**attempt))
                if self.url is not None:
                    try:
                        self._resync()
                    except (requests.ConnectionError, requests.Timeout):
                        pass
        raise RuntimeError(f"upload {self.url} did not go through")
