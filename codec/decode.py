"""Decoding any audio (Ogg Opus segments included) to 16 kHz mono float32 with PyAV,
through faster-whisper's own decoder so Whisper sees exactly what it expects."""

from __future__ import annotations

import os

import numpy as np
from faster_whisper.audio import decode_audio

SAMPLE_RATE_16K = 16000


def decode_to_16k_mono(path: str | os.PathLike[str]) -> np.ndarray:
    return decode_audio(str(path), sampling_rate=SAMPLE_RATE_16K)
