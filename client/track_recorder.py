"""One track's audio into rolling Ogg Opus segments in the spool, encoded as it arrives.

Time is counted in captured frames from the track's origin (the meeting time of its first
frame in this run), never read off the wall clock while recording, so two tracks recorded
for hours stay aligned. Frames that were not kept (a full spool) still advance the time:
the next segment starts where its audio belongs, and the server sees a gap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from client.spool import Spool, TrackState
from codec.segmenter import ENCODE_RATE, OggOpusFileWriter

ClosedSegment = Callable[[str, int, int, Path, int], None]  # track, seq, start_ms, path, frames


def level_dbfs(block: np.ndarray) -> float:
    """RMS level of int16 samples in dB below full scale (-120 for silence)."""
    if len(block) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(block.astype(np.float32) / 32768.0))))
    return max(-120.0, 20.0 * float(np.log10(rms)) if rms > 0 else -120.0)


class TrackRecorder:
    def __init__(
        self,
        name: str,
        track: TrackState,
        spool: Spool,
        segment_seconds: float,
        on_closed: ClosedSegment,
    ) -> None:
        self.name = name
        self.track = track
        self.spool = spool
        self.segment_frames = round(segment_seconds * ENCODE_RATE)
        self.on_closed = on_closed
        self.origin_ms = 0.0
        self.position = 0  # frames since the origin, kept or not
        self.level = -120.0
        self.dropped_frames = 0
        self._writer: OggOpusFileWriter | None = None
        self._segment_start = 0  # position of the open segment's first frame

    def begin(self, origin_ms: float, position: int = 0) -> None:
        self.origin_ms = origin_ms
        self.position = position

    def _meeting_ms(self, position: int) -> int:
        return round(self.origin_ms + position * 1000 / ENCODE_RATE)

    def write(self, block: np.ndarray) -> None:
        self.level = level_dbfs(block)
        while len(block):
            if self._writer is None:
                path = self.spool.segment_path(self.name, self.track.next_seq)
                self._writer = OggOpusFileWriter(path.with_suffix(".part"))
                self._segment_start = self.position
            take = min(len(block), self.segment_frames - self._writer.samples_written)
            self._writer.write(block[:take])
            self.position += take
            block = block[take:]
            if self._writer.samples_written >= self.segment_frames:
                self.close_segment()

    def skip(self, frames: int) -> None:
        """Time passes without audio being kept."""
        self.close_segment()
        self.position += frames
        self.dropped_frames += frames

    def close_segment(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        seq = self.track.next_seq
        final = self.spool.segment_path(self.name, seq)
        writer.path.replace(final)
        self.on_closed(
            self.name, seq, self._meeting_ms(self._segment_start), final, writer.samples_written
        )

    @property
    def open_frames(self) -> int:
        return self._writer.samples_written if self._writer else 0
