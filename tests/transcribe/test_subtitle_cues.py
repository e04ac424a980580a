"""Subtitle cues: sentence ends, 42 characters a line, two lines and 7 s a cue."""

from __future__ import annotations

import pytest

from transcribe.subtitle_cues import CueWord, cut_cues, words_from_text, wrap

pytestmark = pytest.mark.storage_free


def _words(text: str, step_ms: int = 300) -> list[CueWord]:
    return [CueWord(i * step_ms, i * step_ms + 250, t) for i, t in enumerate(text.split())]


def test_cues_end_at_sentence_ends():
    cues = cut_cues(_words("Yes. I agree with that. Shall we go?"))
    assert [" ".join(c.lines) for c in cues] == ["Yes.", "I agree with that.", "Shall we go?"]
    assert cues[1].start_ms == 300 and cues[1].end_ms == 4 * 300 + 250


def test_lines_and_cues_stay_within_limits():
    text = " ".join(["word"] * 60)  # no sentence end at all
    for step in (100, 300):
        cues = cut_cues(_words(text, step), prefix="[mic]")
        said = [w for c in cues for w in " ".join(c.lines).split() if w != "[mic]"]
        assert said == ["word"] * 60
        for cue in cues:
            assert 1 <= len(cue.lines) <= 2
            assert all(len(line) <= 42 for line in cue.lines)
            assert cue.end_ms - cue.start_ms <= 7000
            assert cue.lines[0].startswith("[mic] word")


def test_wrap_keeps_an_overlong_word_whole():
    assert wrap(["a" * 50, "b"]) == ["a" * 50, "b"]
    assert wrap(["x" * 45], first_prefix="[mic]") == ["[mic] " + "x" * 45]


def test_words_from_text_spread_over_the_line():
    words = words_from_text(1000, 3000, "one three")
    assert words[0].start_ms == 1000 and words[-1].end_ms == 3000
    assert words[0].end_ms == words[1].start_ms
