"""Scoring a transcript against a spoken meeting: word error rate with Whisper's English
normalizer, and whether each line was placed at the time it was spoken."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import jiwer

from bench.spoken_meeting import Line


@cache
def _normalizer():  # type: ignore[no-untyped-def]
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@cache
def _basic_normalizer():  # type: ignore[no-untyped-def]
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str, language: str = "en") -> str:
    """Whisper's English normalizer for English; its basic one (case, punctuation, marks in
    brackets; letters such as ü and ñ kept) for other languages, as Whisper scores them."""
    return (_normalizer() if language == "en" else _basic_normalizer())(text)


def wer(reference: str, hypothesis: str, language: str = "en") -> float:
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    return jiwer.wer(ref, hyp) if hyp else 1.0


@dataclass(frozen=True)
class TimedWord:
    text: str
    start_s: float
    segment_start_s: float  # start of the transcript segment the word is in


def line_offsets(lines: Sequence[Line], words: Sequence[TimedWord]) -> list[float | None]:
    """For each line, how far the segment holding its first word starts from the line's true
    start (seconds, signed); None when the line's first word was not recognised or does not
    begin a segment. Words are matched in order (difflib) after normalising."""
    ref: list[tuple[int, str]] = []  # (line index, word)
    for i, line in enumerate(lines):
        ref += [(i, w) for w in normalize(line.text).split()]
    hyp: list[tuple[TimedWord, str]] = []
    for w in words:
        hyp += [(w, token) for token in normalize(w.text).split()]
    matcher = difflib.SequenceMatcher(a=[w for _, w in ref], b=[t for _, t in hyp], autojunk=False)
    matched = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            matched[block.a + k] = hyp[block.b + k][0]
    offsets: list[float | None] = []
    first = 0
    for i, line in enumerate(lines):
        word = matched.get(first)
        if word is None:
            offsets.append(None)
        else:
            offsets.append(word.segment_start_s - line.start_s)
        first += sum(1 for li, _ in ref if li == i)
    return offsets


def placed(offsets: Sequence[float | None], tolerance_s: float) -> int:
    return sum(1 for o in offsets if o is not None and abs(o) <= tolerance_s)
