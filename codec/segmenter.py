"""Cuts audio by the clock into rolling Ogg Opus segment files (what a recorder uploads).

Decoding and Opus encoding go through PyAV (FFmpeg's libopus), streaming block by block:
a recording is never held whole in memory nor written as WAV.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ENCODE_RATE = 48000
SPEECH_BITRATE = 24000


@dataclass(frozen=True)
class SegmentFile:
    path: Path
    seq: int
    start_ms: int
    duration_ms: int


def iter_pcm(
    path: str | os.PathLike[str], sample_rate: int = ENCODE_RATE, block_seconds: float = 1.0
) -> Iterator[np.ndarray]:
    """Mono int16 blocks of about `block_seconds` from any file PyAV can read."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    block = int(sample_rate * block_seconds)
    pending: list[np.ndarray] = []
    size = 0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pending.append(out.to_ndarray().reshape(-1))
                size += out.samples
                while size >= block:
                    joined = np.concatenate(pending)
                    yield joined[:block]
                    pending, size = [joined[block:]], len(joined) - block
        for out in resampler.resample(None):
            pending.append(out.to_ndarray().reshape(-1))
    rest = np.concatenate(pending) if pending else np.zeros(0, np.int16)
    for i in range(0, len(rest), block):
        yield rest[i : i + block]


class OggOpusFileWriter:
    """Encodes 48 kHz mono int16 PCM to an Ogg Opus file, streaming."""

    def __init__(self, path: str | os.PathLike[str], bitrate: int = SPEECH_BITRATE) -> None:
        self.path = Path(path)
        self._container = av.open(str(self.path), "w", format="ogg")
        self._stream = self._container.add_stream("libopus", rate=ENCODE_RATE)
        self._stream.layout = "mono"
        self._stream.bit_rate = bitrate
        self._stream.codec_context.options = {"application": "voip"}
        self.samples_written = 0

    def write(self, pcm: np.ndarray) -> None:
        if len(pcm) == 0:
            return
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = ENCODE_RATE
        frame.pts = self.samples_written
        frame.time_base = Fraction(1, ENCODE_RATE)
        self.samples_written += len(pcm)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        with open(self.path, "rb+") as f:
            os.fsync(f.fileno())


def encode_segments(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    segment_seconds: float,
    prefix: str = "seg",
) -> list[SegmentFile]:
    """Cuts `src` at exact sample positions every `segment_seconds` (may be fractional)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    segments: list[SegmentFile] = []
    writer: OggOpusFileWriter | None = None
    position = 0  # samples since the start
    seq = 0

    def boundary(n: int) -> int:
        return round(n * segment_seconds * ENCODE_RATE)

    def close_current() -> None:
        nonlocal writer
        if writer is None:
            return
        writer.close()
        start = boundary(seq)
        segments.append(
            SegmentFile(
                writer.path,
                seq,
                round(start * 1000 / ENCODE_RATE),
                round(writer.samples_written * 1000 / ENCODE_RATE),
            )
        )
        writer = None

    for block in iter_pcm(src):
        while len(block):
            if writer is None:
                writer = OggOpusFileWriter(out / f"{prefix}-{seq:05d}.opus")
            take = min(len(block), boundary(seq + 1) - position)
            writer.write(block[:take])
            position += take
            block = block[take:]
            if position >= boundary(seq + 1):
                close_current()
                seq += 1
    close_current()
    return segments
