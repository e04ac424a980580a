"""Discord bot adapter: each speaker's Opus packets stream into the meeting as a track.

A discord.py voice-receive sink calls `feed(user_id, packet, rtp_timestamp)` for every
20 ms packet. Packets are muxed into Ogg pages as they are (no re-encoding) and uploaded
while the segment grows; a segment closes every `segment_seconds` or at a long silence.
RTP timestamps keep speech at its true meeting time: a short gap (silence, packet loss) is
filled with silence frames, a long one starts a new segment at the right `start_ms`.
`close()` ends every track and finalizes the meeting with each track's last seq.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from client.streaming_upload import StreamingUpload
from codec.ogg_mux import PRE_SKIP, OggOpusMuxer
from codec.opus_packets import FRAME_SAMPLES, SAMPLE_RATE, SILENCE_FRAME

RTP_WRAP = 1 << 32
FILL_GAPS_UP_TO_S = 1.0


@dataclass
class _Segment:
    seq: int
    start_ms: int
    muxer: OggOpusMuxer
    upload: StreamingUpload
    samples: int = 0  # audio samples written (48 kHz), silence fill included


@dataclass
class _Track:
    user_id: str
    first_rtp: int
    first_ms: int
    next_seq: int = 0
    expected_rtp: int | None = None  # RTP timestamp the next packet should carry
    segment: _Segment | None = None
    last_seq: int | None = None
    unflushed_since: float = field(default_factory=time.monotonic)


class DiscordMeetingStreamer:
    def __init__(
        self,
        server_url: str,
        meeting_id: str,
        segment_seconds: float = 30.0,
        api_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        flush_every_s: float = 1.0,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.meeting_id = meeting_id
        self.segment_samples = int(segment_seconds * SAMPLE_RATE)
        self.clock = clock
        self.started_at = clock()
        self.flush_every_s = flush_every_s
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self._tracks: dict[str, _Track] = {}
        self._queue: queue.Queue[tuple[str, bytes, int, float] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="discord-upload", daemon=True)
        self._thread.start()

    # Called from the voice-receive thread: never blocks on the network.
    def feed(
        self, user_id: str, packet: bytes, rtp_timestamp: int, received_at: float | None = None
    ) -> None:
        if self._error is not None:
            raise RuntimeError("the upload thread failed") from self._error
        self._queue.put((str(user_id), bytes(packet), rtp_timestamp, received_at or self.clock()))

    def close(self) -> dict:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("the upload thread failed") from self._error
        last_seq = {t.user_id: t.last_seq for t in self._tracks.values() if t.last_seq is not None}
        r = self.session.post(
            f"{self.server_url}/meetings/{self.meeting_id}/finalize",
            json={"last_seq": last_seq},
            timeout=30,
        )
        r.raise_for_status()
        return r.json()

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                self._on_packet(*item)
            for track in self._tracks.values():
                self._close_segment(track)
        except BaseException as exc:  # surfaced to the caller on the next feed/close
            self._error = exc

    def _on_packet(self, user_id: str, packet: bytes, rtp: int, received_at: float) -> None:
        track = self._tracks.get(user_id)
        if track is None:
            # A user who joins late starts at the meeting time their first packet arrived.
            first_ms = max(0, round((received_at - self.started_at) * 1000))
            track = self._tracks[user_id] = _Track(user_id, rtp, first_ms)
        since_first = (rtp - track.first_rtp) % RTP_WRAP
        meeting_ms = track.first_ms + round(since_first * 1000 / SAMPLE_RATE)
        gap = 0 if track.expected_rtp is None else (rtp - track.expected_rtp) % RTP_WRAP
        if gap > RTP_WRAP // 2:
            return  # late or duplicate packet: already covered
        segment = track.segment
        if segment is not None and (
            gap > FILL_GAPS_UP_TO_S * SAMPLE_RATE or segment.samples >= self.segment_samples
        ):
            self._close_segment(track)
            segment = None
        if segment is None:
            segment = self._open_segment(track, meeting_ms)
        elif gap > 0:
            for _ in range(gap // FRAME_SAMPLES):
                self._write(track, segment, SILENCE_FRAME)
        self._write(track, segment, packet)
        track.expected_rtp = (rtp + FRAME_SAMPLES) % RTP_WRAP
        if self.clock() - track.unflushed_since >= self.flush_every_s:
            segment.upload.flush()
            track.unflushed_since = self.clock()

    def _open_segment(self, track: _Track, start_ms: int) -> _Segment:
        seq = track.next_seq
        track.next_seq += 1
        upload = StreamingUpload(
            self.session,
            f"{self.server_url}/files/",
            {
                "meeting_id": self.meeting_id,
                "track": track.user_id,
                "seq": str(seq),
                "start_ms": str(start_ms),
                "filetype": "audio/ogg",
            },
        )
        track.segment = _Segment(seq, start_ms, OggOpusMuxer(random.getrandbits(31)), upload)
        return track.segment

    def _write(self, track: _Track, segment: _Segment, packet: bytes) -> None:
        segment.samples += FRAME_SAMPLES
        segment.upload.append(segment.muxer.write_packet(packet, PRE_SKIP + segment.samples))

    def _close_segment(self, track: _Track) -> None:
        segment = track.segment
        if segment is None:
            return
        segment.upload.append(segment.muxer.close())
        segment.upload.flush(final=True)
        track.last_seq = segment.seq
        track.segment = None
