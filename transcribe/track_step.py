"""One step of a track's transcription: carry + this chunk -> committed segments + new carry.

The carry is the audio from the decoder's seek position on, with the decoder's state: the
next chunk's job continues faster-whisper's long-form loop exactly where this one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from transcribe.carry import SAMPLE_RATE, AudioPiece, Window, build_window
from transcribe.engine import WhisperEngine
from transcribe.long_form import DecodedSegment, DecoderState, windows_ready
from transcribe.word_timing import (
    Span,
    TimedWord,
    line_text,
    says_something,
    snap_to_speech,
    split_at_pauses,
)

LINE_PAUSE_SAMPLES = SAMPLE_RATE  # a second without words starts a new line


@dataclass(frozen=True)
class CommittedWord:
    start_ms: int  # absolute meeting time
    end_ms: int
    text: str
    probability: float


@dataclass(frozen=True)
class CommittedSegment:
    start_ms: int  # absolute meeting time
    end_ms: int
    text: str
    words: tuple[CommittedWord, ...] = ()


@dataclass(frozen=True)
class TrackCarry:
    audio: AudioPiece  # not decoded yet: from the seek position to the end of the chunk
    state: DecoderState


@dataclass(frozen=True)
class StepResult:
    segments: list[CommittedSegment]
    carry: TrackCarry | None


def _samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def _lines(window: Window, decoded: DecodedSegment, speech: list[Span]) -> list[CommittedSegment]:
    """A decoded segment as transcript lines with meeting times: words snapped onto the
    speech, cut where the speaker paused; punctuation alone is dropped."""
    words = [
        TimedWord(
            *snap_to_speech((_samples(w.start_s), _samples(w.end_s)), speech), w.text, w.probability
        )
        for w in decoded.words
    ]
    if not words:  # faster-whisper gives words for every segment; this is only a fallback
        if not says_something(decoded.text):
            return []
        span = (
            window.to_abs_ms(_samples(decoded.start_s)),
            window.to_abs_ms(_samples(decoded.end_s)),
        )
        return [CommittedSegment(span[0], span[1], decoded.text)]
    lines = []
    for group in split_at_pauses(words, LINE_PAUSE_SAMPLES):
        text = line_text(group)
        if not says_something(text):
            continue
        committed = tuple(
            CommittedWord(
                window.to_abs_ms(w.start),
                window.to_abs_ms(w.end),
                w.text.strip(),
                round(w.probability, 3),
            )
            for w in group
        )
        lines.append(CommittedSegment(committed[0].start_ms, committed[-1].end_ms, text, committed))
    return lines


def transcribe_step(
    engine: WhisperEngine, carry: TrackCarry | None, chunk: AudioPiece, flush: bool
) -> StepResult:
    pieces = [p for p in (carry.audio if carry else None, chunk) if p is not None]
    pieces = [p for p in pieces if len(p.samples) > 0]
    state = carry.state if carry else DecoderState()
    if not pieces:
        return StepResult([], None)
    window = build_window(pieces)
    if not windows_ready(len(window.audio), flush):
        # No whole window yet: nothing is decoded, the audio waits for the next chunk.
        return StepResult([], TrackCarry(window.tail(0), state))
    speech = engine.detect_speech(window.audio)
    result = engine.decode_windows(window.audio, state, speech, final=flush)

    segments = [
        committed for decoded in result.segments for committed in _lines(window, decoded, speech)
    ]
    next_carry = None
    if not flush and result.consumed < len(window.audio):
        next_carry = TrackCarry(window.tail(result.consumed), result.state)
    return StepResult(segments, next_carry)


def transcribe_track(
    engine: WhisperEngine, audio, segment_seconds: float, carry: bool = True
) -> list[CommittedSegment]:
    """A whole track cut by the clock into segments, each step run as a worker runs it (with
    the carry), or with `carry=False` each segment alone. For benchmarks and tests."""
    step = round(segment_seconds * SAMPLE_RATE)
    segments: list[CommittedSegment] = []
    held: TrackCarry | None = None
    for i in range(0, len(audio), step):
        piece = AudioPiece(round(i * 1000 / SAMPLE_RATE), audio[i : i + step])
        last = i + step >= len(audio)
        result = transcribe_step(engine, held if carry else None, piece, flush=last or not carry)
        held = result.carry
        segments += result.segments
    return segments
