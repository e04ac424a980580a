"""One step of a track's transcription: carry + this chunk -> committed segments + new carry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transcribe.carry import SAMPLE_RATE, AudioPiece, build_window, choose_cut
from transcribe.engine import WhisperEngine

MIN_HEAD_SAMPLES = SAMPLE_RATE // 10


@dataclass(frozen=True)
class CommittedSegment:
    start_ms: int  # absolute meeting time
    end_ms: int
    text: str


@dataclass(frozen=True)
class StepResult:
    segments: list[CommittedSegment]
    carry: AudioPiece | None


def transcribe_step(
    engine: WhisperEngine,
    carry: AudioPiece | None,
    chunk: AudioPiece,
    flush: bool,
    carry_cap_s: float = 30.0,
    min_head_s: float = 6.0,
) -> StepResult:
    pieces = [p for p in (carry, chunk) if p is not None and len(p.samples) > 0]
    if not pieces:
        return StepResult([], None)
    window = build_window(pieces)
    audio = window.audio
    speech = engine.detect_speech(audio)
    cut = (
        len(audio)
        if flush
        else choose_cut(
            audio,
            speech,
            int(carry_cap_s * SAMPLE_RATE),
            min_head_samples=int(min(min_head_s, carry_cap_s / 2) * SAMPLE_RATE),
        )
    )
    segments: list[CommittedSegment] = []
    # No initial_prompt with the track's previous text: measured on 8.5 min of speech, it made
    # tiny.en drop a quarter of the words (WER 13.9% -> 35.2%); the carry alone keeps words
    # whole at the boundary.
    head_has_speech = any(start < cut for start, _ in speech)
    if cut >= MIN_HEAD_SAMPLES and head_has_speech:
        # Only the head is transcribed: the carried tail is heard once, in the next step.
        for raw in engine.transcribe(audio[:cut]):
            start = min(int(raw.start_s * SAMPLE_RATE), cut)
            end = max(start, min(int(raw.end_s * SAMPLE_RATE), cut))
            segments.append(
                CommittedSegment(window.to_abs_ms(start), window.to_abs_ms(end), raw.text)
            )
    rest = audio[cut:]
    next_carry = None
    if not flush and len(rest) > 0:
        next_carry = AudioPiece(window.to_abs_ms(cut), np.array(rest, dtype=np.float32))
    return StepResult(segments, next_carry)


def transcribe_track(
    engine: WhisperEngine, audio: np.ndarray, segment_seconds: float, carry: bool = True
) -> list[CommittedSegment]:
    """A whole track cut by the clock into segments, each step run as a worker runs it (with
    the carry), or with `carry=False` each segment alone. For benchmarks and tests."""
    step = round(segment_seconds * SAMPLE_RATE)
    segments: list[CommittedSegment] = []
    held: AudioPiece | None = None
    for i in range(0, len(audio), step):
        piece = AudioPiece(round(i * 1000 / SAMPLE_RATE), audio[i : i + step])
        last = i + step >= len(audio)
        result = transcribe_step(engine, held if carry else None, piece, flush=last or not carry)
        held = result.carry
        segments += result.segments
    return segments
