"""The track buffer and its anchors, then real speech cut inside words through the carry."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REFERENCE, words
from transcribe.carry import SAMPLE_RATE, AudioPiece, build_window
from transcribe.long_form import DecoderState, windows_ready
from transcribe.track_step import TrackCarry, transcribe_step, transcribe_track

pytestmark = pytest.mark.storage_free

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


def test_a_carry_across_a_gap_keeps_its_anchors():
    # Chunk 0 at 0-1 s, chunk 1 at 10-11 s: the carry holds both, and the gap.
    w = build_window(
        [AudioPiece(0, np.ones(SR, np.float32)), AudioPiece(10_000, np.ones(SR, np.float32))]
    )
    carry = w.tail(SR // 2)  # from 0.5 s on
    assert carry.start_ms == 500
    assert carry.end_ms == 11_000
    # The next chunk follows at 11 s: every sample keeps its meeting time.
    nxt = build_window([carry, AudioPiece(11_000, np.ones(SR, np.float32))])
    assert nxt.to_abs_ms(0) == 500
    assert nxt.to_abs_ms(SR // 2 + SR) == 10_000  # after 0.5 s of chunk 0 and 1 s of zeros
    assert nxt.to_abs_ms(len(nxt.audio) - SR) == 11_000
    # Stored and read back (JSON), the carry is the same.
    stored = TrackCarry(carry, DecoderState((50257, 400), -0.5))
    again = TrackCarry.from_stored(carry.start_ms, carry.samples, stored.stored_state())
    assert again.audio.all_anchors() == carry.all_anchors()
    assert again.state == stored.state


def test_a_window_is_decoded_once_all_of_it_has_arrived():
    assert not windows_ready(30 * SR - 160, final=False)  # a frame short of a window
    assert windows_ready(30 * SR, final=False)  # one whole window
    assert windows_ready(3 * SR, final=True)  # the track ended: decode what is left
    assert not windows_ready(100, final=True)  # less than one frame


def test_cut_inside_words_every_word_once_in_order(whisper_engine, jfk_audio):
    segments = transcribe_track(whisper_engine, jfk_audio, 2.3)
    assert words(" ".join(s.text for s in segments)) == REFERENCE
    starts = [s.start_ms for s in segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start_ms <= s.end_ms <= 11_100 for s in segments)
    # Without the carry, the same cuts mangle words: the test can tell the difference.
    naive = words(" ".join(s.text for s in transcribe_track(whisper_engine, jfk_audio, 2.3, False)))
    assert naive != REFERENCE


def test_gap_keeps_absolute_times(whisper_engine, jfk_audio):
    # Split at the pause after "...for you" (about 7.9 s) and place the rest 5 s later.
    split = int(7.9 * SR)
    first = transcribe_step(whisper_engine, None, AudioPiece(0, jfk_audio[:split]), flush=False)
    assert first.segments == [] and first.carry is not None  # less than a window: carried
    second = transcribe_step(
        whisper_engine, first.carry, AudioPiece(7900 + 5000, jfk_audio[split:]), flush=True
    )
    assert words(" ".join(s.text for s in second.segments)) == REFERENCE
    late = [w for s in second.segments for w in s.words if w.text.lower().startswith("ask")]
    assert late[0].start_ms < 7900 and late[1].start_ms >= 12_900  # "ask not", "ask what"
    assert second.segments[-1].end_ms <= 12_900 + 3_200
