"""Word times put on the speech, and segments cut into lines where the speaker paused.

Pure functions over sample indices, testable alone. Whisper's word times come from its
attention and tend to start early after a silence (measured on festival voices: 0.1 to
0.5 s, and a line after a long silence at the start of a window is stamped at the window's
start); the voice activity detector's onsets are within a few tens of milliseconds. So a
word that begins in silence begins where the speech it belongs to begins.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

Span = tuple[int, int]  # [start, end) in samples


def snap_to_speech(word: Span, speech: Sequence[Span]) -> Span:
    """Move a word's start that lies in silence to the onset of the first speech region that
    begins inside the word, and an end that lies in silence back to the end of the last
    region that ends inside it. A word with no speech under it is left as it is."""
    start, end = word
    starts = [s for s, _ in speech]
    i = bisect_right(starts, start) - 1
    if i < 0 or speech[i][1] <= start:  # the start is in silence
        nxt = i + 1
        if nxt < len(speech) and speech[nxt][0] < end:
            start = speech[nxt][0]
    j = bisect_right(starts, end - 1) - 1
    if j >= 0 and speech[j][1] < end and speech[j][1] > start:  # the end is in silence
        end = speech[j][1]
    return start, max(start, end)


@dataclass(frozen=True)
class TimedWord:
    start: int  # samples
    end: int
    text: str
    probability: float


def split_at_pauses(words: Sequence[TimedWord], min_pause: int) -> list[list[TimedWord]]:
    """Consecutive words grouped into lines: a pause of at least `min_pause` samples between
    two words starts a new line (Whisper sometimes puts two utterances of a speaker, far
    apart, in one segment; on a one-speaker track the other speakers talk in between)."""
    lines: list[list[TimedWord]] = []
    for word in words:
        if lines and word.start - lines[-1][-1].end < min_pause:
            lines[-1].append(word)
        else:
            lines.append([word])
    return lines


def line_text(words: Sequence[TimedWord]) -> str:
    # faster-whisper's words carry their leading space ("Hello", " world").
    return "".join(w.text for w in words).strip()


def says_something(text: str) -> bool:
    """A segment of punctuation alone (".", "...") is no speech."""
    return any(ch.isalnum() for ch in text)
