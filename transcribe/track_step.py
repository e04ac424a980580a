"""One step of a track's transcription: carry + this chunk -> committed segments + new carry.

The carry is the audio from the decoder's seek position on, with the decoder's state: the
next chunk's job continues faster-whisper's long-form loop exactly where this one stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from transcribe.carry import SAMPLE_RATE, AudioPiece, Window, build_window
from transcribe.engine import Detection, WhisperEngine
from transcribe.long_form import DecodedSegment, DecoderState, windows_ready
from transcribe.word_timing import (
    Span,
    TimedWord,
    line_text,
    looks_hallucinated,
    mostly_silence,
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

    def stored_state(self) -> dict[str, Any]:
        """What the database keeps beside the carried samples (JSON)."""
        return {
            "prompt": list(self.state.prompt),
            "last_speech_s": self.state.last_speech_s,
            "anchors": [list(a) for a in self.audio.anchors],
        }

    @classmethod
    def from_stored(
        cls, start_ms: int, samples: np.ndarray, stored: dict[str, Any] | None
    ) -> TrackCarry:
        """A carry as stored; one written before decoder states existed (no `stored`) is
        plain audio that the decoder starts on afresh."""
        stored = stored or {}
        anchors = tuple((int(i), int(ms)) for i, ms in stored.get("anchors", []))
        state = DecoderState(
            tuple(int(t) for t in stored.get("prompt", [])),
            float(stored.get("last_speech_s", 0.0)),
        )
        return cls(AudioPiece(start_ms, samples, anchors), state)


@dataclass(frozen=True)
class StepResult:
    segments: list[CommittedSegment]
    carry: TrackCarry | None
    # The track's language when this step found it (`auto` and the first speech), else None.
    detected: Detection | None = None


def _samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def _lines(window: Window, decoded: DecodedSegment, speech: list[Span]) -> list[CommittedSegment]:
    """A decoded segment as transcript lines with meeting times: words snapped onto the
    speech, cut where the speaker paused; punctuation alone is dropped."""
    spans = [(_samples(w.start_s), _samples(w.end_s)) for w in decoded.words]
    # Text Whisper made up in a silence ("Thank you." after the last line): its words look
    # like faster-whisper's hallucinations and most of their time is not speech.
    if mostly_silence(spans, speech) and looks_hallucinated(
        [(w.start_s, w.end_s, w.text, w.probability) for w in decoded.words]
    ):
        return []
    words = [
        TimedWord(*snap_to_speech(span, speech), w.text, w.probability)
        for span, w in zip(spans, decoded.words, strict=True)
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
    engine: WhisperEngine,
    carry: TrackCarry | None,
    chunk: AudioPiece,
    flush: bool,
    language: str = "auto",
) -> StepResult:
    """`language`: the track's, or `auto` while it is not known yet; then it is detected
    from the first speech decoded and kept for the rest of the track (the caller stores it)."""
    pieces = [p for p in (carry.audio if carry else None, chunk) if p and len(p.samples)]
    state = carry.state if carry else DecoderState()
    if not pieces:
        return StepResult([], None)
    window = build_window(pieces)
    if not windows_ready(len(window.audio), flush):
        # No whole window yet: nothing is decoded, the audio waits for the next chunk.
        return StepResult([], TrackCarry(window.tail(0), state))
    speech = engine.detect_speech(window.audio)
    detected = None
    if language == "auto":
        detected = engine.detect_language(window.audio, speech)
        if detected is None:  # no speech: nothing to decode, nothing to detect from
            language = "en"
        else:
            language = detected.language
    result = engine.decode_windows(window.audio, state, speech, final=flush, language=language)

    segments = [
        committed for decoded in result.segments for committed in _lines(window, decoded, speech)
    ]
    next_carry = None
    if not flush and result.consumed < len(window.audio):
        next_carry = TrackCarry(window.tail(result.consumed), result.state)
    return StepResult(segments, next_carry, detected)


def transcribe_blocks(
    engine: WhisperEngine,
    carry: TrackCarry | None,
    blocks: Iterable[AudioPiece],
    flush: bool,
    language: str = "auto",
) -> StepResult:
    """One chunk given as consecutive blocks: each block is a step with the carry, as if it
    were a chunk of its own, so the audio held at once is two blocks and the carry, however
    long the chunk. No blocks at all (a track's tail job): the carry alone is flushed."""
    segments: list[CommittedSegment] = []
    detected: Detection | None = None
    pending = iter(blocks)
    block = next(pending, None)
    if block is None:
        block = AudioPiece(round(carry.audio.end_ms) if carry else 0, np.zeros(0, np.float32))
    while block is not None:
        following = next(pending, None)  # read ahead: the last block is the one to flush
        result = transcribe_step(
            engine, carry, block, flush=flush and following is None, language=language
        )
        if result.detected is not None:
            detected = result.detected
            language = detected.language  # the rest of the track keeps it
        segments += result.segments
        carry = result.carry
        block = following
    return StepResult(segments, carry, detected)


def track_steps(
    engine: WhisperEngine,
    audio: np.ndarray,
    segment_seconds: float,
    carry: bool = True,
    language: str = "auto",
    on_detected: Callable[[Detection], None] | None = None,
) -> Iterator[tuple[int, list[CommittedSegment]]]:
    """A whole track cut by the clock into segments, each step run as a worker runs it (with
    the carry, and the language detected once), or with `carry=False` each segment alone.
    Yields, for each segment, the track time its audio reached (ms) and what was committed
    then. For benchmarks and tests."""
    step = round(segment_seconds * SAMPLE_RATE)
    held: TrackCarry | None = None
    for i in range(0, len(audio), step):
        piece = AudioPiece(round(i * 1000 / SAMPLE_RATE), audio[i : i + step])
        last = i + step >= len(audio)
        result = transcribe_step(
            engine, held if carry else None, piece, flush=last or not carry, language=language
        )
        if result.detected is not None:
            language = result.detected.language
            if on_detected is not None:
                on_detected(result.detected)
        held = result.carry
        yield round(min(i + step, len(audio)) * 1000 / SAMPLE_RATE), result.segments


def transcribe_track(
    engine: WhisperEngine,
    audio: np.ndarray,
    segment_seconds: float,
    carry: bool = True,
    language: str = "auto",
) -> list[CommittedSegment]:
    return [
        s for _, step in track_steps(engine, audio, segment_seconds, carry, language) for s in step
    ]
