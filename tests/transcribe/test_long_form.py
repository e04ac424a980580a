"""The chunk-by-chunk path against faster-whisper on the whole track, and silence."""

from __future__ import annotations

import numpy as np
import pytest

from bench.spoken_meeting import trim
from bench.transcript_scoring import normalize, wer
from tests.conftest import REFERENCE, words
from transcribe.carry import SAMPLE_RATE
from transcribe.track_step import transcribe_track

pytestmark = pytest.mark.storage_free

SR = SAMPLE_RATE
READINGS_AT_S = (1.0, 27.5, 48.0)  # one across the first window's end


@pytest.fixture(scope="module")
def sparse_track(jfk_audio):
    """62 s of one speaker: three readings of jfk with long silences between them."""
    speech = trim(jfk_audio)
    track = np.zeros(62 * SR, dtype=np.float32)
    for at in READINGS_AT_S:
        track[round(at * SR) : round(at * SR) + len(speech)] = speech
    return track


@pytest.mark.parametrize("segment_s", [2.3, 8, 30])
def test_chunk_by_chunk_is_the_whole_track(whisper_engine, sparse_track, segment_s):
    whole = normalize(" ".join(s.text for s in whisper_engine.transcribe(sparse_track)))
    chunked = transcribe_track(whisper_engine, sparse_track, segment_s)
    text = normalize(" ".join(s.text for s in chunked))
    assert words(text) == REFERENCE * 3  # every word once, in order
    # At least as right as faster-whisper on the whole track. (It was word for word the same
    # on an Intel machine; on an AMD EPYC with AVX-512 tiny.en's int8 decoding of the whole
    # track drops the first words of the reading that crosses its first 30 s window.)
    reference = " ".join(REFERENCE * 3)
    assert wer(reference, text) <= wer(reference, whole), (text, whole)
    # Each reading starts a line within 0.5 s of its first sound, whatever the window did.
    starts = [s.start_ms / 1000 for s in chunked if "and so" in normalize(s.text)]
    assert len(starts) == 3
    assert all(abs(a - b) <= 0.5 for a, b in zip(starts, READINGS_AT_S, strict=True)), starts
    # Word times are absolute, in order, inside their line.
    times = [(w.start_ms, w.end_ms) for s in chunked for w in s.words]
    assert times == sorted(times)
    assert all(s.start_ms <= w.start_ms <= w.end_ms <= s.end_ms for s in chunked for w in s.words)


def _noises() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(40 * SR) / SR
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 40 * t**2))  # 200 Hz rising to 3.4 kHz
    chords = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))  # C major
    music = chords * (0.6 + 0.4 * np.sign(np.sin(2 * np.pi * 2 * t)))  # pulsing, like a beat
    return {
        "silence": np.zeros(40 * SR),
        "hiss": 0.02 * rng.standard_normal(40 * SR),
        "chirp": chirp,
        "music": music,
    }


@pytest.mark.parametrize("kind", ["silence", "hiss", "chirp", "music"])
def test_silence_noise_and_music_say_nothing_and_cost_no_decoding(
    whisper_engine, monkeypatch, kind
):
    encoded = []
    real_encode = whisper_engine.model.encode
    monkeypatch.setattr(
        whisper_engine.model, "encode", lambda f: encoded.append(1) or real_encode(f)
    )
    audio = _noises()[kind].astype(np.float32)
    assert transcribe_track(whisper_engine, audio, 8) == []
    assert encoded == []  # no window reached the decoder
