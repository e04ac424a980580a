"""Subtitle cues from a transcript line's words: cut at sentence ends, at most two lines of
42 characters and 7 seconds a cue (the common broadcast limits). Pure, testable alone."""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_MS = 7000
SENTENCE_ENDS = (".", "?", "!", "…")


@dataclass(frozen=True)
class CueWord:
    start_ms: int
    end_ms: int
    text: str


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    lines: tuple[str, ...]


def wrap(words: list[str], width: int = MAX_LINE_CHARS, first_prefix: str = "") -> list[str]:
    """Greedy wrap to `width` characters a line, `first_prefix` counted on the first line.
    A word longer than a line stands alone on its line."""
    lines: list[str] = []
    prefix = first_prefix.strip()
    current = prefix
    for word in words:
        candidate = f"{current} {word}" if current else word
        # The label never stands alone on a line: its first word joins it.
        if len(candidate) <= width or not current or current == prefix and not lines:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def _fits(words: list[CueWord], prefix: str) -> bool:
    return (
        len(wrap([w.text for w in words], first_prefix=prefix)) <= MAX_LINES
        and words[-1].end_ms - words[0].start_ms <= MAX_CUE_MS
    )


def cut_cues(words: list[CueWord], prefix: str = "") -> list[Cue]:
    """Consecutive words grouped into cues; `prefix` (a speaker label) opens each cue."""
    groups: list[list[CueWord]] = []
    for word in words:
        current = groups[-1] if groups else None
        ended = current is not None and current[-1].text.endswith(SENTENCE_ENDS)
        if current is None or ended or not _fits([*current, word], prefix):
            groups.append([word])
        else:
            current.append(word)
    return [
        Cue(g[0].start_ms, g[-1].end_ms, tuple(wrap([w.text for w in g], first_prefix=prefix)))
        for g in groups
    ]


def words_from_text(start_ms: int, end_ms: int, text: str) -> list[CueWord]:
    """Words with times spread by their length, for a line stored without word times."""
    tokens = text.split()
    total = sum(len(t) + 1 for t in tokens) or 1
    out, at = [], float(start_ms)
    for token in tokens:
        span = (end_ms - start_ms) * (len(token) + 1) / total
        out.append(CueWord(round(at), round(at + span), token))
        at += span
    return out
