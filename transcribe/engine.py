"""faster-whisper, loaded once per process from a local CTranslate2 folder (never a hub)."""

from __future__ import annotations

import logging
import os
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
from transcribe.model_catalog import resolve as resolve_model

log = logging.getLogger("rollscribe.engine")

SAMPLE_RATE = 16000
SEED = 20261123


@dataclass(frozen=True)
class EngineSettings:
    model: str | None = None  # a name or folder (transcribe/model_catalog.py); None: tiny.en
    device: str = "auto"  # auto | cpu | cuda
    compute_type: str | None = None  # None: int8 on the CPU, float16 on a GPU
    cpu_threads: int = 0  # 0: every core this process may run on
    beam_size: int = 5


DEVICES = ("auto", "cpu", "cuda")
DEFAULT_COMPUTE_TYPE = {"cpu": "int8", "cuda": "float16"}


class EngineUnavailable(Exception):
    """The engine cannot start as configured; the message is the one line to show."""


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # cpu | cuda
    compute_type: str
    reason: str  # for the log: why this device


def choose_device(requested: str, compute_type: str | None, cuda_devices: int) -> DeviceChoice:
    """Where the model runs: `auto` takes CUDA when CTranslate2 sees a device."""
    if requested not in DEVICES:
        raise EngineUnavailable(f"unknown device {requested!r}: give one of {', '.join(DEVICES)}")
    if requested == "cuda" and cuda_devices == 0:
        raise EngineUnavailable("device cuda asked for, but CTranslate2 sees no CUDA device")
    if requested == "auto":
        device = "cuda" if cuda_devices else "cpu"
        reason = (
            f"auto: CTranslate2 sees {cuda_devices} CUDA device(s)"
            if cuda_devices
            else "auto: CTranslate2 sees no CUDA device"
        )
    else:
        device, reason = requested, "asked for"
    return DeviceChoice(device, compute_type or DEFAULT_COMPUTE_TYPE[device], reason)


def usable_cores() -> int:
    """The cores this process may run on (its affinity, as a container or taskset sets it)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Detection:
    language: str
    probability: float


# Speech (at most one window of it) from which a track's language is detected.
DETECTION_SAMPLES = 30 * SAMPLE_RATE


class WhisperEngine:
    def __init__(self, settings: EngineSettings) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        self.settings = settings
        self.model_info = resolve_model(settings.model)
        choice = choose_device(
            settings.device, settings.compute_type, ctranslate2.get_cuda_device_count()
        )
        self.device_choice = choice
        threads = settings.cpu_threads or usable_cores()
        try:
            self.model = WhisperModel(
                str(self.model_info.path),
                device=choice.device,
                compute_type=choice.compute_type,
                cpu_threads=threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError) as exc:  # a truncated model.bin, a bad compute type
            raise EngineUnavailable(
                f"cannot load model {self.model_info.name!r} ({self.model_info.path}) on "
                f"{choice.device} as {choice.compute_type}: {exc}"
            ) from None
        log.info(
            "model %s (%s) on %s (%s), %s, %d CPU threads",
            self.model_info.name,
            self.model_info.path,
            choice.device,
            choice.reason,
            choice.compute_type,
            threads,
        )
        # The same settings for the whole-track path and the chunk-by-chunk one. The language
        # is not among them: it is the track's (the tokenizer's start sequence carries it).
        self.decode_kwargs: dict[str, Any] = {
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
        # so nothing is decoded here (a language is given so that nothing is detected).
        _segments, info = self.model.transcribe(
            np.zeros(SAMPLE_RATE, dtype=np.float32), language="en", **self.decode_kwargs
        )
        self.options = info.transcription_options
        self._tokenizers: dict[str, Any] = {}

    def tokenizer(self, language: str) -> Any:
        """The tokenizer whose start sequence names `language` (one per language, kept)."""
        from faster_whisper.tokenizer import Tokenizer

        if language not in self.model_info.languages:
            raise EngineUnavailable(
                f"model {self.model_info.name!r} cannot transcribe language {language!r}"
            )
        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self.model.hf_tokenizer,
                self.model.model.is_multilingual,
                task="transcribe",
                language=language,
            )
        return self._tokenizers[language]

    @staticmethod
    def _seed() -> None:
        import ctranslate2

        # Whisper falls back to sampling (temperature > 0) on hard audio. A fixed seed makes
        # a job that runs again (its worker died) give exactly the same segments and carry.
        ctranslate2.set_random_seed(SEED)

    def transcribe(self, audio: np.ndarray, language: str = "auto") -> list[DecodedSegment]:
        """The whole audio at once, as faster-whisper does it: the reference the chunked
        path is measured against. `auto`: faster-whisper detects from the first 30 s."""
        self._seed()
        segments, _info = self.model.transcribe(
            audio, language=None if language == "auto" else language, **self.decode_kwargs
        )
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
        language: str,
    ) -> DecodeResult:
        self._seed()
        return decode_windows(
            self.model, self.tokenizer(language), self.options, audio, state, speech, final
        )

    def detect_language(
        self, audio: np.ndarray, speech: Sequence[tuple[int, int]]
    ) -> Detection | None:
        """The language of the speech in `audio` (None: there is none), from one window
        that starts at the first speech. Leading silence would weigh on the guess; speech
        spliced together (silence cut out) was guessed worse still (bench/README.md,
        "Models")."""
        if not self.model_info.multilingual:
            return Detection("en", 1.0)
        if not speech:
            return None
        start = speech[0][0]
        language, probability, _all = self.model.detect_language(
            audio=audio[start : start + DETECTION_SAMPLES]
        )
        return Detection(language, round(float(probability), 3))

    def detect_speech(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Speech regions in samples, from the Silero VAD model bundled with faster-whisper."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        regions = get_speech_timestamps(
            audio, VadOptions(min_silence_duration_ms=250, speech_pad_ms=60)
        )
        return [(int(r["start"]), int(r["end"])) for r in regions]
