"""One Discord speaker's Opus packets into Ogg Opus segment files in the spool, without
re-encoding. Where each packet goes is decided by `packet_timing`; this keeps the open
segment's file and closes it (fsynced, renamed from `.part`) for the uploader."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from client.discord_bot.packet_timing import (
    SAMPLES_PER_MS,
    Action,
    SpeakerClock,
    place_in_segment,
    place_packet,
    segment_idle,
)
from client.spool import Spool, TrackState
from codec.ogg_mux import PRE_SKIP, OggOpusMuxer
from codec.opus_packets import FRAME_SAMPLES, SILENCE_FRAME, packet_samples

# track, seq, start_ms, path, samples
ClosedSegment = Callable[[str, int, int, Path, int], None]


@dataclass
class _OpenSegment:
    seq: int
    start_ms: float
    muxer: OggOpusMuxer
    file: BinaryIO
    path: Path
    samples: int = 0  # 48 kHz samples written, silence included

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.samples / SAMPLES_PER_MS


class SpeakerTrack:
    def __init__(
        self,
        name: str,
        track: TrackState,
        spool: Spool,
        segment_seconds: float,
        pause_seconds: float,
        on_closed: ClosedSegment,
    ) -> None:
        self.name = name
        self.track = track
        self.spool = spool
        self.segment_seconds = segment_seconds
        self.pause_seconds = pause_seconds
        self.on_closed = on_closed
        self.clock: SpeakerClock | None = None
        self.last_arrival_ms: float | None = None
        # End of the audio this speaker already has, across restarts: nothing is placed
        # before it (a clock that jumped back, a restart sooner than the audio it kept).
        self.kept_until_ms = track.kept_until_ms
        self.packets = 0
        self.dropped_late = 0
        self._segment: _OpenSegment | None = None
        self._last_packet = SILENCE_FRAME

    def packet(self, ssrc: int, rtp: int, opus: bytes, arrival_ms: float) -> bool:
        """Keeps one packet; False when its time was already covered (dropped)."""
        self.clock, packet_ms = place_packet(
            self.clock, ssrc, rtp, arrival_ms, floor_ms=self.kept_until_ms
        )
        self.last_arrival_ms = arrival_ms
        segment = self._segment
        open_span = None if segment is None else (segment.start_ms, segment.end_ms)
        placement = place_in_segment(open_span, packet_ms, self.segment_seconds, self.pause_seconds)
        if placement.action is Action.DROP:
            self.dropped_late += 1
            return False
        if placement.action is Action.NEW_SEGMENT:
            self.close_segment()
            self._segment = self._open(packet_ms)
        segment = self._segment
        assert segment is not None
        for _ in range(placement.silence_frames):
            self._write(segment, SILENCE_FRAME, FRAME_SAMPLES)
        for _ in range(placement.repeat_frames):
            self._write(segment, self._last_packet, FRAME_SAMPLES)
        self._write(segment, opus, packet_samples(opus) or FRAME_SAMPLES)
        self._last_packet = opus
        self.kept_until_ms = segment.end_ms
        self.packets += 1
        return True

    def skip_until(self, arrival_ms: float) -> None:
        """Audio not kept (a full spool): the open segment ends here, and nothing of this
        speaker is placed before `arrival_ms` (the server sees a gap)."""
        self.close_segment()
        self.clock = None
        self.kept_until_ms = max(self.kept_until_ms, arrival_ms)

    def tick(self, now_ms: float) -> None:
        if self._segment is not None and segment_idle(
            self.last_arrival_ms, now_ms, self.pause_seconds
        ):
            self.close_segment()

    @property
    def recording(self) -> bool:
        return self._segment is not None

    def _open(self, start_ms: float) -> _OpenSegment:
        seq = self.track.next_seq
        path = self.spool.segment_path(self.name, seq).with_suffix(".part")
        return _OpenSegment(
            seq, start_ms, OggOpusMuxer(random.getrandbits(31)), open(path, "wb"), path
        )

    def _write(self, segment: _OpenSegment, opus: bytes, samples: int) -> None:
        segment.samples += samples
        segment.file.write(segment.muxer.write_packet(opus, PRE_SKIP + segment.samples))

    def close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        segment.file.write(segment.muxer.close())
        segment.file.flush()
        os.fsync(segment.file.fileno())
        segment.file.close()
        final = segment.path.with_suffix(".opus")
        segment.path.replace(final)
        # The callback records it in the spool's state (next_seq included) under its lock.
        self.on_closed(self.name, segment.seq, round(segment.start_ms), final, segment.samples)
