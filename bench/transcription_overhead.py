"""Benchmark: what the chunked, carried path costs against faster-whisper on the whole file.

For segments of 10, 30 and 60 s it runs rollscribe's own per-track step (VAD pause cut +
carry, the worker's code) and, for contrast, each segment transcribed alone; it reports
CPU time relative to the whole recording transcribed at once, and word error rate against
the reference text. Run: `./dev bench transcription_overhead` (about 10 minutes).
"""

from __future__ import annotations

import argparse
import time

import jiwer
import numpy as np

from bench.server_under_test import RESULTS, save_results
from bench.speech_corpus import SR, build_corpus
from transcribe.engine import EngineSettings, WhisperEngine
from transcribe.track_step import transcribe_track

NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(
        reference, hypothesis, reference_transform=NORMALISE, hypothesis_transform=NORMALISE
    )


def cpu_run(fn) -> tuple[str, float]:  # type: ignore[no-untyped-def]
    start = time.process_time()
    text = fn()
    return text, time.process_time() - start


def whole(engine: WhisperEngine, audio: np.ndarray) -> str:
    return " ".join(s.text for s in engine.transcribe(audio))


def chunked(engine: WhisperEngine, audio: np.ndarray, seconds: float, carry: bool) -> str:
    return " ".join(s.text for s in transcribe_track(engine, audio, seconds, carry))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    corpus = build_corpus(args.minutes, RESULTS.parent / "work" / "corpus")
    duration = len(corpus.audio) / SR
    engine = WhisperEngine(EngineSettings(cpu_threads=args.threads))
    rows = []
    text, base_cpu = cpu_run(lambda: whole(engine, corpus.audio))
    base_wer = wer(corpus.reference, text)
    rows.append(
        {
            "path": "whole recording after stop",
            "segment_s": None,
            "wer": base_wer,
            "cpu_s": base_cpu,
            "cpu_ratio": 1.0,
        }
    )
    for seconds in (10, 30, 60):
        for carry, name in ((True, "rollscribe: pause cut + carry"), (False, "each segment alone")):
            text, cpu = cpu_run(lambda s=seconds, c=carry: chunked(engine, corpus.audio, s, c))
            rows.append(
                {
                    "path": name,
                    "segment_s": seconds,
                    "wer": wer(corpus.reference, text),
                    "cpu_s": cpu,
                    "cpu_ratio": cpu / base_cpu,
                }
            )
    print(
        f"\n{duration / 60:.1f} min of two-voice speech ({len(corpus.reference.split())} words),"
        f" tiny.en int8, {args.threads} threads\n"
    )
    print(f"{'path':32} {'segment':>8} {'WER':>7} {'CPU s':>8} {'CPU vs whole':>13}")
    for r in rows:
        seg = f"{r['segment_s']} s" if r["segment_s"] else "-"
        print(
            f"{r['path']:32} {seg:>8} {100 * r['wer']:6.1f}% {r['cpu_s']:8.1f} "
            f"{r['cpu_ratio']:12.2f}x"
        )
    verdicts = [
        {
            "segment_s": r["segment_s"],
            "wer_points_over_whole": 100 * (r["wer"] - base_wer),
            "cpu_ratio": r["cpu_ratio"],
            "meets_goal": 100 * (r["wer"] - base_wer) <= 1.0 and r["cpu_ratio"] <= 1.10,
        }
        for r in rows
        if r["path"].startswith("rollscribe")
    ]
    for v in verdicts:
        print(
            f"goal (<= +1 WER point, <= 1.10x CPU) at {v['segment_s']} s: "
            f"{'met' if v['meets_goal'] else 'NOT met'} "
            f"({v['wer_points_over_whole']:+.1f} points, {v['cpu_ratio']:.2f}x)"
        )
    save_results(
        "transcription_overhead",
        {
            "audio_minutes": duration / 60,
            "reference_words": len(corpus.reference.split()),
            "rows": rows,
            "verdicts": verdicts,
        },
    )


if __name__ == "__main__":
    main()
