"""A track's audio as one buffer: the carried audio, then the chunk, with true meeting times.

Pure numpy, testable alone. A buffer sample's meeting time comes from anchors: (buffer
index, meeting ms of that sample). A gap between pieces (a silence the client did not send,
packet loss, a missing chunk) is shortened to at most a second of zeros, so the anchors and
not the sample count say where later audio belongs; a carry keeps its anchors with it.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
CONTIGUOUS_MS = 5  # rounding between a carry's end and the next chunk's start_ms

Anchor = tuple[int, int]  # (sample index, absolute meeting ms of that sample)


@dataclass(frozen=True)
class AudioPiece:
    start_ms: int  # absolute meeting time of the first sample
    samples: np.ndarray  # float32, 16 kHz mono
    # Further anchors inside the piece, past its first sample (a carry that spans a gap).
    anchors: tuple[Anchor, ...] = ()

    def all_anchors(self) -> list[Anchor]:
        return [(0, self.start_ms), *self.anchors]

    @property
    def end_ms(self) -> float:
        index, ms = self.all_anchors()[-1]
        return ms + (len(self.samples) - index) * 1000 / SAMPLE_RATE


@dataclass(frozen=True)
class Window:
    audio: np.ndarray
    anchors: list[Anchor]

    def to_abs_ms(self, index: int) -> int:
        i = max(0, bisect_right([a[0] for a in self.anchors], index) - 1)
        position, ms = self.anchors[i]
        return ms + round((index - position) * 1000 / SAMPLE_RATE)

    def tail(self, start: int) -> AudioPiece:
        """audio[start:] as a piece, with the anchors that fall inside it."""
        inner = tuple((i - start, ms) for i, ms in self.anchors if i > start)
        return AudioPiece(self.to_abs_ms(start), np.array(self.audio[start:]), inner)


def build_window(pieces: list[AudioPiece], max_gap_fill_ms: int = 1000) -> Window:
    """Concatenates pieces in order. A gap between pieces is filled with at most
    `max_gap_fill_ms` of zeros so Whisper hears a pause, while the anchors keep every later
    sample at its true meeting time. A small overlap is taken as contiguous."""
    parts: list[np.ndarray] = []
    anchors: list[Anchor] = []
    position = 0
    previous_end: float | None = None
    for piece in pieces:
        start_ms = piece.start_ms
        if previous_end is not None:
            gap = piece.start_ms - previous_end
            if gap > CONTIGUOUS_MS:
                fill = int(min(gap, max_gap_fill_ms) * SAMPLE_RATE / 1000)
                parts.append(np.zeros(fill, dtype=np.float32))
                position += fill
            else:
                start_ms = round(previous_end)
        shift = start_ms - piece.start_ms
        anchors += [(position + i, ms + shift) for i, ms in piece.all_anchors()]
        parts.append(piece.samples.astype(np.float32, copy=False))
        position += len(piece.samples)
        previous_end = piece.end_ms + shift
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return Window(audio, anchors)
