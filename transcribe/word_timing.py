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


def overlap(span: Span, speech: Sequence[Span]) -> int:
    """Samples of `span` that lie in speech."""
    return sum(max(0, min(span[1], e) - max(span[0], s)) for s, e in speech)


def snap_to_speech(word: Span, speech: Sequence[Span]) -> Span:
    """Put a word onto the speech it belongs to.

    - A start that lies in silence moves to the onset of the first speech region that
      begins inside the word; an end that lies in silence moves back to the end of the last
      region that ends inside it.
    - A word with no speech under it at all (the attention drifted into the silence after a
      line: "with the budget" stamped seconds after it was said) moves to the nearest edge
      of the nearest speech region, keeping its length as far as the region allows.
    """
    if not speech:
        return word
    start, end = word
    if overlap((start, max(end, start + 1)), speech) == 0:
        duration = end - start
        s, e = min(speech, key=lambda r: min(abs(r[0] - end), abs(start - r[1])))
        if e <= start:  # the nearest speech is before the word
            return max(s, e - duration), e
        return s, min(e, s + duration)
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


def mostly_silence(words: Sequence[Span], speech: Sequence[Span], least: float = 0.3) -> bool:
    """Whether less than `least` of the words' time lies in speech."""
    total = sum(max(0, e - s) for s, e in words)
    return total > 0 and sum(overlap(w, speech) for w in words) < least * total


def looks_hallucinated(words: Sequence[tuple[float, float, str, float]]) -> bool:
    """faster-whisper's own test for a hallucinated segment (`is_segment_anomaly` inside
    `generate_segments`, which it only applies with hallucination_silence_threshold; it is
    not importable): improbable, very short or very long words among the first eight.
    `words`: (start_s, end_s, text, probability)."""
    punctuation = "\"'“¿([{-\"'.。,，!！?？:：”)]}、"
    scored = [w for w in words if w[2].strip() not in punctuation][:8]
    score = 0.0
    for start, end, _text, probability in scored:
        duration = end - start
        score += 1.0 if probability < 0.15 else 0.0
        score += (0.133 - duration) * 15 if duration < 0.133 else 0.0
        score += duration - 2.0 if duration > 2.0 else 0.0
    return bool(scored) and (score >= 3 or score + 0.01 >= len(scored))


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
