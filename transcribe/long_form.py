"""faster-whisper's long-form decoding, run one whole 30 s window at a time with its state
carried between a track's chunks.

Transcribing a whole track, faster-whisper walks it in 30 s windows: each window is decoded
with the text of the windows before it as the prompt, and the next window starts where the
last complete segment ended (the seek position). That loop is already incremental, but
`WhisperModel.transcribe` runs it to the end of the audio it is given: it decodes the last,
partial window as if the recording stopped there, and it keeps the loop's state to itself.
A track that arrives chunk by chunk needs the loop to stop before a window whose audio has
not all arrived, and to hand its state (the audio from the seek position, the prompt tokens,
the time speech last ended) to the next chunk's job. So `decode_windows` runs the steps of
`WhisperModel.generate_segments` (faster-whisper 1.2, pinned in pyproject.toml) with the
model's own methods for each step; hand-written only as far as the loop itself.

One addition: a window in which the voice activity detector finds no speech is skipped
without decoding, so silence costs no decoder time and cannot come back as "Thank you.".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame
WINDOW_FRAMES = 3000  # 30 s
# faster-whisper (like Whisper) uses the last max_length // 2 - 1 = 223 tokens as the prompt.
PROMPT_TOKENS = 223


@dataclass(frozen=True)
class DecoderState:
    """What the loop knows between windows, carried from one chunk of a track to the next."""

    prompt: tuple[int, ...] = ()  # tokens since the last prompt reset (at most the last 223)
    last_speech_s: float = 0.0  # when the last word ended, relative to the carried audio


@dataclass(frozen=True)
class DecodedWord:
    start_s: float  # relative to the audio passed in
    end_s: float
    text: str
    probability: float


@dataclass(frozen=True)
class DecodedSegment:
    start_s: float
    end_s: float
    text: str
    words: tuple[DecodedWord, ...]


@dataclass(frozen=True)
class DecodeResult:
    segments: list[DecodedSegment]
    consumed: int  # samples decoded or skipped as silence; audio[consumed:] is carried
    state: DecoderState


def has_speech(speech: Sequence[tuple[int, int]], lo: int, hi: int) -> bool:
    """Whether any speech region (samples) overlaps [lo, hi)."""
    return any(start < hi and end > lo for start, end in speech)


def windows_ready(samples: int, final: bool) -> bool:
    """Whether a buffer of this many samples holds a window to decode now: a whole window
    (the same window the whole track would decode), or at the end of a track whatever is
    left."""
    frames = samples // HOP
    return frames > 0 and (final or frames >= WINDOW_FRAMES)


def decode_windows(
    model: Any,
    tokenizer: Any,
    options: Any,
    audio: np.ndarray,
    state: DecoderState,
    speech: Sequence[tuple[int, int]],
    final: bool,
) -> DecodeResult:
    """Decode every whole window of `audio` (and, when `final`, the partial last one).

    `model` is a `faster_whisper.WhisperModel`, `tokenizer` and `options` what its
    `transcribe` builds; `speech` the voice activity regions of `audio` in samples.
    """
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.utils import get_end

    features = model.feature_extractor(audio)
    content_frames = features.shape[-1] - 1
    time_per_frame = model.feature_extractor.time_per_frame
    all_tokens = list(state.prompt)
    prompt_reset_since = 0
    last_speech = state.last_speech_s
    seek = 0
    out: list[DecodedSegment] = []
    while seek < content_frames:
        remaining = content_frames - seek
        if remaining < WINDOW_FRAMES and not final:
            break  # the rest waits for the next chunk, as part of a whole window
        segment_size = min(WINDOW_FRAMES, remaining)
        if not has_speech(speech, seek * HOP, (seek + segment_size) * HOP):
            seek += segment_size
            continue
        time_offset = seek * time_per_frame
        segment_duration = segment_size * time_per_frame
        encoder_output = model.encode(pad_or_trim(features[:, seek : seek + segment_size]))
        prompt = model.get_prompt(
            tokenizer,
            all_tokens[prompt_reset_since:],
            without_timestamps=options.without_timestamps,
            prefix=None,
            hotwords=options.hotwords,
        )
        result, avg_logprob, temperature, _ratio = model.generate_with_fallback(
            encoder_output, prompt, tokenizer, options
        )
        if (
            options.no_speech_threshold is not None
            and result.no_speech_prob > options.no_speech_threshold
            and not (
                options.log_prob_threshold is not None and avg_logprob > options.log_prob_threshold
            )
        ):
            seek += segment_size
            continue
        current, seek, single_timestamp_ending = model._split_segments_by_timestamps(
            tokenizer=tokenizer,
            tokens=result.sequences_ids[0],
            time_offset=time_offset,
            segment_size=segment_size,
            segment_duration=segment_duration,
            seek=seek,
        )
        if options.word_timestamps:
            model.add_word_timestamps(
                [current],
                tokenizer,
                encoder_output,
                segment_size,
                options.prepend_punctuations,
                options.append_punctuations,
                last_speech_timestamp=last_speech,
            )
            if not single_timestamp_ending:
                last_word_end = get_end(current)
                if last_word_end is not None and last_word_end > time_offset:
                    seek = round(last_word_end * model.frames_per_second)
            last_word_end = get_end(current)
            if last_word_end is not None:
                last_speech = last_word_end
        for segment in current:
            text = tokenizer.decode(segment["tokens"])
            if segment["start"] == segment["end"] or not text.strip():
                continue
            all_tokens.extend(segment["tokens"])
            words = tuple(
                DecodedWord(w["start"], w["end"], w["word"], w["probability"])
                for w in segment.get("words") or []
            )
            out.append(DecodedSegment(segment["start"], segment["end"], text.strip(), words))
        if (
            not options.condition_on_previous_text
            or temperature > options.prompt_reset_on_temperature
        ):
            prompt_reset_since = len(all_tokens)
    # Short of the end, at least the last frame stays carried: the next chunk's job then
    # always has the prompt and the last speech time to go on with (a window that ended
    # exactly at the end of the audio would otherwise leave an empty carry, and they would
    # be lost). The next window then starts 10 ms early, which changes nothing measurable.
    consumed = len(audio) if final else min(seek, content_frames - 1) * HOP
    consumed_s = consumed / SAMPLE_RATE
    prompt = tuple(all_tokens[prompt_reset_since:][-PROMPT_TOKENS:])
    return DecodeResult(out, consumed, DecoderState(prompt, last_speech - consumed_s))
