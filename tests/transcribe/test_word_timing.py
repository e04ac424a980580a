"""Word times onto speech, lines at pauses, text said into silence: the pure rules."""

from __future__ import annotations

import pytest

from transcribe.word_timing import (
    TimedWord,
    line_text,
    looks_hallucinated,
    mostly_silence,
    says_something,
    snap_to_speech,
    split_at_pauses,
)

pytestmark = pytest.mark.storage_free

SPEECH = [(1000, 2000), (5000, 9000)]


def test_a_start_in_silence_moves_to_the_onset():
    assert snap_to_speech((4200, 5600), SPEECH) == (5000, 5600)
    assert snap_to_speech((5100, 5600), SPEECH) == (5100, 5600)  # already on speech


def test_an_end_in_silence_moves_back_to_the_end_of_speech():
    assert snap_to_speech((1500, 3500), SPEECH) == (1500, 2000)
    assert snap_to_speech((8000, 9500), SPEECH) == (8000, 9000)


def test_a_word_with_no_speech_under_it_joins_the_nearest_speech():
    assert snap_to_speech((2600, 2600), SPEECH) == (2000, 2000)  # drifted after speech
    assert snap_to_speech((2500, 2900), SPEECH) == (1600, 2000)
    assert snap_to_speech((4500, 4800), SPEECH) == (5000, 5300)  # just before speech
    assert snap_to_speech((4500, 4800), []) == (4500, 4800)  # nothing to snap to


def test_text_said_into_silence():
    assert mostly_silence([(1900, 3000), (3000, 3500)], SPEECH)  # 100 of 1600 in speech
    assert not mostly_silence([(1200, 1900), (1900, 2400)], SPEECH)
    assert not mostly_silence([(3000, 3000)], SPEECH)  # no duration: nothing to judge


def test_lines_cut_at_pauses():
    w = [
        TimedWord(0, 100, " Yes.", 0.9),
        TimedWord(150, 300, " Go", 0.9),
        TimedWord(2000, 2100, " Now", 0.9),
    ]
    lines = split_at_pauses(w, min_pause=1000)
    assert [line_text(x) for x in lines] == ["Yes. Go", "Now"]
    assert split_at_pauses([], 1000) == []


def test_punctuation_alone_says_nothing():
    assert not says_something(" . ")
    assert not says_something("...")
    assert says_something("8.")


def test_hallucinated_text_looks_like_faster_whispers_anomalies():
    # "Thank you." after the last line: an improbable word stretched over 2 s, then a word
    # of no length.
    assert looks_hallucinated([(12.36, 14.32, " Thank", 0.02), (14.32, 14.32, " you.", 0.98)])
    # A real line whose first word drifted into the silence before it.
    real = [(14.7, 16.1, " That", 0.7), (16.1, 16.36, " is", 0.97), (16.36, 16.48, " a", 0.9)]
    assert not looks_hallucinated(real + [(16.48, 16.9, " famous", 0.99)])
    assert not looks_hallucinated([(1.0, 1.0, " .", 0.1)])  # punctuation is not scored
