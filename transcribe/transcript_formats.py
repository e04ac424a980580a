"""Renders a meeting transcript as JSON, plain text, SRT or WebVTT."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def render(
    lines: list[TranscriptLine],
    fmt: str,
    *,
    meeting_id: str,
    final: bool,
    gaps: list[dict[str, Any]] | None = None,
) -> str:
    gaps = gaps or []
    if fmt == "json":
        return json.dumps(
            {
                "meeting_id": meeting_id,
                "final": final,
                "segments": [
                    {
                        "start": line.start_ms / 1000,
                        "end": line.end_ms / 1000,
                        "track": line.track,
                        "text": line.text,
                    }
                    for line in lines
                ],
                "gaps": gaps,
            }
        )
    if fmt == "txt":
        body = [f"[{_clock(line.start_ms, '.')}] {line.track}: {line.text}" for line in lines]
        body += [
            f"[gap] {g['track']} seq {g['seq']}: {g.get('reason', g.get('state'))}" for g in gaps
        ]
        return "\n".join(body) + ("\n" if body else "")
    if fmt == "srt":
        cues = [
            f"{i}\n{_clock(line.start_ms, ',')} --> {_clock(line.end_ms, ',')}\n"
            f"[{line.track}] {line.text}\n"
            for i, line in enumerate(lines, start=1)
        ]
        return "\n".join(cues)
    if fmt == "vtt":
        cues = [
            f"{_clock(line.start_ms, '.')} --> {_clock(line.end_ms, '.')}\n"
            f"<v {line.track}>{line.text}\n"
            for line in lines
        ]
        return "WEBVTT\n\n" + "\n".join(cues)
    raise ValueError(f"unknown format {fmt!r}")
