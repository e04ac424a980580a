"""Decoding any audio (Ogg Opus segments included) to 16 kHz mono float32 with PyAV,
through faster-whisper's own decoding steps so Whisper sees exactly what it expects.

Decoding is streamed in blocks: a worker holds one block of a chunk at a time, so its memory
does not grow with a chunk's length.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import av
import numpy as np

# faster-whisper's own steps (it is pinned, see pyproject.toml); `decode_audio` itself
# gathers the whole file before it returns.
from faster_whisper.audio import _group_frames, _ignore_invalid_frames, _resample_frames

SAMPLE_RATE_16K = 16000
BLOCK_SECONDS = 60.0


def decode_blocks(
    path: str | os.PathLike[str], block_seconds: float = BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """The audio in consecutive blocks of `block_seconds` (the last one shorter)."""
    block = round(block_seconds * SAMPLE_RATE_16K)
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE_16K)
    pending: list[np.ndarray] = []
    held = 0
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            frames = _ignore_invalid_frames(container.decode(audio=0))
            for frame in _resample_frames(_group_frames(frames, 500000), resampler):
                pending.append(frame.to_ndarray().reshape(-1))
                held += pending[-1].size
                while held >= block:
                    joined = np.concatenate(pending)
                    yield joined[:block].astype(np.float32) / 32768.0
                    pending = [joined[block:]]
                    held = pending[0].size
        if held:
            yield np.concatenate(pending).astype(np.float32) / 32768.0
    finally:
        # As faster-whisper does: the resampler's objects are only freed by a collection
        # (https://github.com/SYSTRAN/faster-whisper/issues/390).
        del resampler
        gc.collect()


def decode_to_16k_mono(path: str | os.PathLike[str]) -> np.ndarray:
    """The whole file at once (tests and benchmarks; workers use `decode_blocks`)."""
    blocks = list(decode_blocks(path))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
