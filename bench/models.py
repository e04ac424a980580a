"""Benchmark: the models a server can run, on the same meetings, chunked against whole.

For each installed model (tiny.en bundled, base from `rollscribe[base]`; small has no
complete offline pack, so its row says so), on this machine:
- an English two-voice meeting (festival voices, one track per speaker, as in
  `transcription_overhead`), in English;
- for multilingual models, a German and a Spanish speaker (espeak-ng), each on a track, with
  `language=auto`: the language each track was detected as, and its word error rate.

Each track runs at several start offsets (more leading silence), so each figure is a mean
over runs, never one. Each run transcribes the track whole through faster-whisper (same
model, same settings) and chunked as the server's workers do (5 s segments, with the carry,
the language detected once). Reported: word error rate (Whisper's normalizers), CPU seconds
and wall seconds per audio minute, and how many live meetings of two speakers one worker
using every core keeps up with (derived from the chunked path's wall time: a live meeting
brings two seconds of track audio each second).

Run: `./dev bench models` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bench.server_under_test import RESULTS, save_results
from bench.spoken_meeting import (
    GERMAN_SPANISH,
    GERMAN_SPANISH_LANGUAGES,
    GERMAN_SPANISH_VOICES,
    PLANNING,
    PLANNING_VOICES,
    SR,
    SpokenMeeting,
    build_meeting,
)
from bench.transcript_scoring import wer
from transcribe.engine import EngineSettings, WhisperEngine, usable_cores
from transcribe.model_catalog import ModelUnavailable, resolve
from transcribe.track_step import track_steps

MODELS = ("tiny.en", "base", "small")
OFFSETS = (0.0, 0.4, 0.8)
SEGMENT_S = 5.0
CACHE = RESULTS.parent / "work" / "festival"


@dataclass
class Runs:
    wer: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    audio_s: float = 0.0
    detected: list[str] = field(default_factory=list)
    by_track: dict[str, list[float]] = field(default_factory=dict)

    def add(self, track: str, score: float, cpu_s: float, wall_s: float, audio_s: float) -> None:
        self.wer.append(score)
        self.by_track.setdefault(track, []).append(score)
        self.cpu_s += cpu_s
        self.wall_s += wall_s
        self.audio_s += audio_s

    def summary(self) -> dict[str, object]:
        minutes = self.audio_s / 60
        return {
            "wer_mean": round(statistics.mean(self.wer), 4),
            "wer_min": round(min(self.wer), 4),
            "wer_max": round(max(self.wer), 4),
            "runs": len(self.wer),
            "wer_by_track": {
                track: [round(min(w), 4), round(max(w), 4)] for track, w in self.by_track.items()
            },
            "cpu_s_per_audio_min": round(self.cpu_s / minutes, 2),
            "wall_s_per_audio_min": round(self.wall_s / minutes, 2),
            **({"detected": self.detected} if self.detected else {}),
        }


def _timed(run: Callable[[], str]) -> tuple[str, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    text = run()
    return text, time.process_time() - cpu, time.perf_counter() - wall


def _chunked(engine: WhisperEngine, audio: np.ndarray, language: str, found: list[str]) -> str:
    """The track as the workers transcribe it; what it was detected as goes to `found`."""
    texts = []
    steps = track_steps(
        engine, audio, SEGMENT_S, language=language, on_detected=lambda d: found.append(d.language)
    )
    for _reached, step in steps:
        texts += [s.text for s in step]
    return " ".join(texts)


def run_meeting(
    engine: WhisperEngine, meeting: SpokenMeeting, languages: dict[str, str]
) -> dict[str, Runs]:
    """{"whole"|"chunked": Runs} over every track and offset; `languages`: each track's
    language to score with, and to transcribe in (`auto` detects)."""
    runs = {"whole": Runs(), "chunked": Runs()}
    multilingual = engine.model_info.multilingual
    for track in meeting.tracks:
        spoken = languages[track]
        asked = "auto" if multilingual else "en"
        reference = meeting.reference(track)
        for offset in OFFSETS:
            audio, _lines = meeting.shifted(track, offset)
            audio_s = len(audio) / SR
            text, cpu, wall = _timed(
                lambda audio=audio, asked=asked: " ".join(
                    s.text for s in engine.transcribe(audio, asked)
                )
            )
            runs["whole"].add(track, wer(reference, text, spoken), cpu, wall, audio_s)
            found: list[str] = []
            text, cpu, wall = _timed(
                lambda audio=audio, asked=asked, found=found: _chunked(engine, audio, asked, found)
            )
            runs["chunked"].add(track, wer(reference, text, spoken), cpu, wall, audio_s)
            if multilingual:
                runs["chunked"].detected += [f"{track}:{f}" for f in found]
    return runs


def live_meetings(wall_s_per_audio_min: float, speakers: int = 2) -> int:
    """Meetings of `speakers` tracks one worker keeps up with: each brings `speakers` audio
    seconds per second, and the worker needs this much wall time per audio second."""
    per_audio_s = wall_s_per_audio_min / 60
    return math.floor(1 / (per_audio_s * speakers)) if per_audio_s > 0 else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--english",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the English meeting (--no-english: the German + Spanish one only)",
    )
    args = parser.parse_args()
    english = build_meeting(PLANNING, PLANNING_VOICES, CACHE)
    bilingual = build_meeting(GERMAN_SPANISH, GERMAN_SPANISH_VOICES, CACHE)
    cores = usable_cores()
    rows: list[dict[str, object]] = []
    for name in args.models.split(","):
        try:
            info = resolve(name)
        except ModelUnavailable as exc:
            print(f"{name}: not run: {exc}", flush=True)
            rows.append({"model": name, "not_run": str(exc)})
            continue
        engine = WhisperEngine(EngineSettings(model=name, cpu_threads=cores))
        meetings = []
        if args.english:
            meetings.append(("English two-voice", english, dict.fromkeys(english.tracks, "en")))
        if info.multilingual:
            meetings.append(("German + Spanish", bilingual, GERMAN_SPANISH_LANGUAGES))
        for title, meeting, languages in meetings:
            runs = run_meeting(engine, meeting, languages)
            whole, chunked = runs["whole"].summary(), runs["chunked"].summary()
            row = {
                "model": name,
                "meeting": title,
                "whole": whole,
                "chunked": chunked,
                "live_meetings_one_worker": live_meetings(float(chunked["wall_s_per_audio_min"])),  # type: ignore[arg-type]
            }
            rows.append(row)
            print(
                f"{name:8} {title:18} WER whole {whole['wer_mean']:.1%} "
                f"chunked {chunked['wer_mean']:.1%} ({chunked['wer_min']:.1%}-"
                f"{chunked['wer_max']:.1%}, {chunked['runs']} runs) | CPU s/audio min whole "
                f"{whole['cpu_s_per_audio_min']} chunked {chunked['cpu_s_per_audio_min']} | "
                f"wall s/audio min chunked {chunked['wall_s_per_audio_min']} | live 2-speaker "
                f"meetings: {row['live_meetings_one_worker']}"
                + f" | chunked WER by track (min, max) {chunked['wer_by_track']}"
                + (f" | detected {chunked['detected']}" if "detected" in chunked else ""),
                flush=True,
            )
    path = save_results(
        "models", {"cores": cores, "segment_s": SEGMENT_S, "offsets": OFFSETS, "rows": rows}
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
