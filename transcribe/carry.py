"""Where to cut a track's audio between what is committed now and what is carried forward.

Pure numpy: the voice activity regions are passed in, so the rules are testable alone.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000
CONTIGUOUS_MS = 5  # rounding between a carry's end and the next chunk's start_ms
QUIET_WINDOW = SAMPLE_RATE // 10  # 100 ms
QUIET_STEP = SAMPLE_RATE // 100  # 10 ms


@dataclass(frozen=True)
class AudioPiece:
    start_ms: int  # absolute meeting time of the first sample
    samples: np.ndarray  # float32, 16 kHz mono

    @property
    def end_ms(self) -> float:
        return self.start_ms + len(self.samples) * 1000 / SAMPLE_RATE


@dataclass(frozen=True)
class Window:
    audio: np.ndarray
    anchors: list[tuple[int, int]]  # (buffer sample index, absolute ms of that sample)
    _positions: list[int] = field(default_factory=list, repr=False)

    def to_abs_ms(self, index: int) -> int:
        positions = self._positions or [a[0] for a in self.anchors]
        i = max(0, bisect_right(positions, index) - 1)
        position, ms = self.anchors[i]
        return ms + round((index - position) * 1000 / SAMPLE_RATE)


def build_window(pieces: list[AudioPiece], max_gap_fill_ms: int = 1000) -> Window:
    """Concatenates pieces in order. A gap between pieces (silence, packet loss, a missing
    chunk) is filled with at most `max_gap_fill_ms` of zeros so Whisper hears a pause, while
    the anchors keep every later sample at its true meeting time. A small overlap is taken
    as contiguous."""
    parts: list[np.ndarray] = []
    anchors: list[tuple[int, int]] = []
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
        anchors.append((position, start_ms))
        parts.append(piece.samples.astype(np.float32, copy=False))
        position += len(piece.samples)
        previous_end = start_ms + len(piece.samples) * 1000 / SAMPLE_RATE
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return Window(audio, anchors, [a[0] for a in anchors])


def quietest_point(audio: np.ndarray, lo: int, hi: int) -> int:
    """Centre of the 100 ms window of lowest energy whose start lies in [lo, hi)."""
    best, best_energy = hi, float("inf")
    for start in range(max(0, lo), max(lo + 1, hi), QUIET_STEP):
        frame = audio[start : start + QUIET_WINDOW]
        if len(frame) == 0:
            break
        energy = float(np.mean(frame * frame))
        if energy < best_energy:
            best, best_energy = start + len(frame) // 2, energy
    return min(best, len(audio))


def choose_cut(
    audio: np.ndarray,
    speech: list[tuple[int, int]],
    carry_cap_samples: int,
    min_pause_samples: int = int(0.3 * SAMPLE_RATE),
    min_head_samples: int = 0,
) -> int:
    """Sample index to cut at: audio[:cut] is transcribed and committed, audio[cut:] carried.

    - No speech at all: cut at the end (nothing to carry).
    - The audio ends in a pause of at least `min_pause_samples` after the last speech:
      cut a little after the last speech, so the carry holds no speech.
    - Otherwise: cut in the middle of the last pause of at least `min_pause_samples`
      between two speech regions; with no such pause, carry everything.
    - A head shorter than `min_head_samples` is not committed yet (everything is carried):
      Whisper mishears words in a few seconds of audio that it gets right with more context.
    - Whatever the rule gave, the carry never exceeds `carry_cap_samples`: past it, cut at
      the quietest 100 ms within the last `carry_cap_samples`.
    """
    n = len(audio)
    if not speech:
        return n
    last_end = min(n, speech[-1][1])
    if n - last_end >= min_pause_samples:
        cut = min(n, last_end + min_pause_samples // 2)
    else:
        cut = 0
        for (_, end), (next_start, _) in zip(speech[-2::-1], speech[:0:-1], strict=False):
            if next_start - end >= min_pause_samples:
                cut = (end + next_start) // 2
                break
    if cut < min_head_samples:
        cut = 0
    if n - cut > carry_cap_samples:
        cut = quietest_point(audio, n - carry_cap_samples, n - QUIET_WINDOW)
        cut = max(cut, n - carry_cap_samples)
    return cut
