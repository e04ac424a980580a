"""Renders a meeting transcript as JSON, plain text, SRT or WebVTT."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transcribe.subtitle_cues import Cue, CueWord, cut_cues, words_from_text

FORMATS = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


@dataclass(frozen=True)
class TranscriptLine:
    start_ms: int
    end_ms: int
    track: str
    text: str
    # [{"start": s, "end": s, "word": str, "probability": p}], absolute meeting seconds.
    words: list[dict[str, Any]] = field(default_factory=list)
    label: str | None = None  # the track's label (a display name), when it has one

    @property
    def speaker(self) -> str:
        """What people read: the label, or the track's name."""
        return self.label or self.track

    def cue_words(self) -> list[CueWord]:
        if not self.words:
            return words_from_text(self.start_ms, self.end_ms, self.text)
        return [
            CueWord(round(w["start"] * 1000), round(w["end"] * 1000), w["word"].strip())
            for w in self.words
        ]


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _vtt_escape(text: str) -> str:
    """A voice span's annotation ends at ">"; WebVTT escapes as HTML does."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cues(lines: list[TranscriptLine], label: bool) -> list[tuple[str, Cue]]:
    cues = [
        (line.speaker, cue)
        for line in lines
        for cue in cut_cues(line.cue_words(), prefix=f"[{line.speaker}]" if label else "")
    ]
    return sorted(cues, key=lambda c: c[1].start_ms)


def render(
    lines: list[TranscriptLine],
    fmt: str,
    *,
    meeting_id: str,
    final: bool,
    gaps: list[dict[str, Any]] | None = None,
    languages: dict[str, str] | None = None,
) -> str:
    """`languages`: {"track": "de"}, each track whose language is known (JSON only)."""
    gaps = gaps or []
    if fmt == "json":
        return json.dumps(
            {
                "meeting_id": meeting_id,
                "final": final,
                "languages": languages or {},
                "segments": [
                    {
                        "start": line.start_ms / 1000,
                        "end": line.end_ms / 1000,
                        "track": line.track,
                        "speaker": line.speaker,
                        "text": line.text,
                        "words": line.words,
                    }
                    for line in lines
                ],
                "gaps": gaps,
            }
        )
    if fmt == "txt":
        body = [f"[{_clock(line.start_ms, '.')}] {line.speaker}: {line.text}" for line in lines]
        body += [
            f"[gap] {g['track']} seq {g['seq']}: {g.get('reason', g.get('state'))}" for g in gaps
        ]
        return "\n".join(body) + ("\n" if body else "")
    if fmt == "srt":
        # SRT has no speaker field: the track label opens the cue's first line.
        return "\n".join(
            f"{i}\n{_clock(cue.start_ms, ',')} --> {_clock(cue.end_ms, ',')}\n"
            + "\n".join(cue.lines)
            + "\n"
            for i, (_track, cue) in enumerate(_cues(lines, label=True), start=1)
        )
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(
            f"{_clock(cue.start_ms, '.')} --> {_clock(cue.end_ms, '.')}\n"
            + "\n".join(f"<v {_vtt_escape(speaker)}>{text}" for text in cue.lines)
            + "\n"
            for speaker, cue in _cues(lines, label=False)
        )
    raise ValueError(f"unknown format {fmt!r}")
