"""The pause cut and the carry: unit rules, then real speech cut inside words."""

from __future__ import annotations

import numpy as np

from tests.conftest import REFERENCE, words
from transcribe.carry import SAMPLE_RATE, AudioPiece, build_window, choose_cut
from transcribe.track_step import transcribe_step, transcribe_track

SR = SAMPLE_RATE


def test_build_window_fills_gaps_and_keeps_true_times():
    a = AudioPiece(1000, np.ones(SR, dtype=np.float32))  # 1.0-2.0 s
    b = AudioPiece(7000, np.ones(SR, dtype=np.float32))  # 7.0-8.0 s: a 5 s gap
    w = build_window([a, b], max_gap_fill_ms=1000)
    assert len(w.audio) == 3 * SR  # 1 s + 1 s of zeros + 1 s
    assert np.all(w.audio[SR : 2 * SR] == 0)
    assert w.to_abs_ms(0) == 1000
    assert w.to_abs_ms(SR // 2) == 1500
    assert w.to_abs_ms(2 * SR) == 7000
    assert w.to_abs_ms(2 * SR + SR // 4) == 7250


def test_build_window_treats_rounding_overlap_as_contiguous():
    a = AudioPiece(0, np.ones(SR, dtype=np.float32))
    b = AudioPiece(998, np.ones(SR, dtype=np.float32))
    w = build_window([a, b])
    assert len(w.audio) == 2 * SR
    assert w.to_abs_ms(SR) == 1000


def test_cut_rules():
    audio = np.zeros(10 * SR, dtype=np.float32)
    cap = 30 * SR
    assert choose_cut(audio, [], cap) == len(audio)  # no speech: nothing to carry
    # Ends in a long pause after the last speech: cut shortly after it.
    cut = choose_cut(audio, [(SR, 3 * SR), (4 * SR, 6 * SR)], cap)
    assert 6 * SR <= cut <= 6 * SR + SR // 5
    # Ends in speech: cut in the middle of the last pause.
    cut = choose_cut(audio, [(SR, 3 * SR), (4 * SR, 5 * SR), (6 * SR, 10 * SR)], cap)
    assert cut == (5 * SR + 6 * SR) // 2
    # A pause shorter than the minimum does not count: carry everything.
    assert choose_cut(audio, [(0, 5 * SR), (5 * SR + 100, 10 * SR)], cap) == 0
    # The head would be too short to commit yet: carry everything.
    assert choose_cut(audio, [(0, SR), (2 * SR, 10 * SR)], cap, min_head_samples=3 * SR) == 0


def test_carry_never_exceeds_the_cap_and_cuts_at_the_quietest_point():
    rng = np.random.default_rng(1)
    audio = rng.normal(0, 0.3, 40 * SR).astype(np.float32)
    audio[25 * SR : 25 * SR + SR // 5] *= 0.01  # one quiet moment
    cap = 20 * SR
    cut = choose_cut(audio, [(0, len(audio))], cap)
    assert len(audio) - cut <= cap
    assert 25 * SR <= cut <= 25 * SR + SR // 5


def run_track(engine, audio, seconds: float, carry: bool) -> list:
    return transcribe_track(engine, audio, seconds, carry)


def test_cut_inside_words_every_word_once_in_order(whisper_engine, jfk_audio):
    segments = run_track(whisper_engine, jfk_audio, 2.3, carry=True)
    assert words(" ".join(s.text for s in segments)) == REFERENCE
    starts = [s.start_ms for s in segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start_ms <= s.end_ms <= 11_100 for s in segments)
    # Without the carry, the same cuts mangle words: the test can tell the difference.
    naive = words(" ".join(s.text for s in run_track(whisper_engine, jfk_audio, 2.3, False)))
    assert naive != REFERENCE


def test_gap_keeps_absolute_times(whisper_engine, jfk_audio):
    # Split at the pause after "...for you" (about 7.9 s) and place the rest 5 s later.
    split = int(7.9 * SR)
    first = transcribe_step(whisper_engine, None, AudioPiece(0, jfk_audio[:split]), flush=True)
    second = transcribe_step(
        whisper_engine, None, AudioPiece(7900 + 5000, jfk_audio[split:]), flush=True
    )
    assert words(" ".join(s.text for s in first.segments + second.segments)) == REFERENCE
    assert second.segments[0].start_ms >= 12_900
    assert second.segments[-1].end_ms <= 12_900 + 3_200
