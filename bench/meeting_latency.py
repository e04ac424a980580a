"""Benchmark: time from the last audio to the final transcript, rollscribe against batch.

Meetings of 5, 15 and 30 minutes of speech are recorded through the desktop recorder
(`client.recorder`, 30 s segments, uploads while it plays) into a server with its default
worker pool. The clock is accelerated (`--speed`, default 6x: the 30 minute meeting plays
in 5) so that the run fits in 15 minutes, but uploads and transcription still overlap with
the recording as they would live. Latency is from the moment the recorder has played its
last audio to the server's `completed_at` (transcript assembled) and to the transcript in
the recorder's hands. In the same run the batch alternative (faster-whisper on the whole
recording after stop, same model, same threads) is timed on the same audio.
Run: `./dev bench meeting_latency` (about 12 minutes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import soundfile
from faster_whisper.audio import decode_audio

from bench.server_under_test import (
    RESULTS,
    RollscribeServer,
    save_results,
    wait_for_worker,
)
from bench.speech_corpus import SR, build_corpus
from bench.transcription_overhead import wer
from client.recorder import Recorder, add_record_arguments
from transcribe.engine import EngineSettings, WhisperEngine


def record_meeting(
    server: RollscribeServer, audio_file: Path, spool: Path, speed: float, segment_s: float
) -> dict[str, float | str]:
    parser = argparse.ArgumentParser()
    add_record_arguments(parser)
    args = parser.parse_args(
        [
            "--server",
            server.url,
            "--track",
            f"room={audio_file}",
            "--spool",
            str(spool),
            "--segment-seconds",
            str(segment_s),
            "--speed",
            str(speed),
            "--wait",
            "--format",
            "json",
            "--output",
            str(spool.with_suffix(".json")),
        ]
    )
    recorder = Recorder(args)
    stamps: dict[str, float] = {"start": time.time()}

    def record() -> None:
        recorder.record()
        stamps["last_audio"] = time.time()

    # Recorder.run(), with a stamp when the last audio has been played.
    recording = threading.Thread(target=record, name="record")
    recording.start()
    recorder.uploader.run(more_to_come=recording.is_alive)
    recording.join()
    recorder.finalize()
    recorder.wait_and_write()
    stamps["transcript_in_hand"] = time.time()
    view = recorder.uploader.get_json(f"/meetings/{recorder.state.meeting_id}")
    return {
        "meeting_id": str(recorder.state.meeting_id),
        "recorded_wall_s": stamps["last_audio"] - stamps["start"],
        "latency_to_completed_s": view["completed_at"] - stamps["last_audio"],
        "latency_to_client_s": stamps["transcript_in_hand"] - stamps["last_audio"],
        "chunks": len(view["chunks"]),
        "text": " ".join(
            s["text"] for s in json.loads(spool.with_suffix(".json").read_text())["segments"]
        ),
    }


def batch(engine: WhisperEngine, audio_file: Path) -> tuple[float, str]:
    started = time.perf_counter()
    audio = decode_audio(str(audio_file), sampling_rate=SR)
    text = " ".join(s.text for s in engine.transcribe(audio))
    return time.perf_counter() - started, text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 15, 30])
    parser.add_argument("--speed", type=float, default=6.0)
    parser.add_argument("--segment-seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = RollscribeServer(
            tmp / "data", "--workers", "1", "--worker-threads", str(args.threads)
        )
        try:
            wait_for_worker(tmp / "data")
            engine = WhisperEngine(EngineSettings(cpu_threads=args.threads))
            for minutes in args.minutes:
                corpus = build_corpus(minutes, RESULTS.parent / "work" / "corpus")
                audio_file = tmp / f"meeting-{minutes:g}.flac"
                soundfile.write(audio_file, corpus.audio, SR)
                duration = len(corpus.audio) / SR
                ours = record_meeting(
                    server, audio_file, tmp / f"spool-{minutes:g}", args.speed, args.segment_seconds
                )
                batch_s, batch_text = batch(engine, audio_file)
                row = {
                    "minutes": duration / 60,
                    "chunks": ours["chunks"],
                    "recorded_wall_s": ours["recorded_wall_s"],
                    "rollscribe_latency_s": ours["latency_to_completed_s"],
                    "rollscribe_latency_client_s": ours["latency_to_client_s"],
                    "batch_latency_s": batch_s,
                    "batch_over_rollscribe": batch_s / float(ours["latency_to_completed_s"]),
                    "rollscribe_wer": wer(corpus.reference, str(ours["text"])),
                    "batch_wer": wer(corpus.reference, batch_text),
                }
                rows.append(row)
                print(
                    f"{row['minutes']:.1f} min: rollscribe {row['rollscribe_latency_s']:.1f} s"
                    f" (client {row['rollscribe_latency_client_s']:.1f} s),"
                    f" batch {batch_s:.1f} s",
                    flush=True,
                )
        finally:
            server.stop()
    print(
        f"\nlast audio -> final transcript, tiny.en int8, {args.threads} threads,"
        f" recorder at {args.speed:g}x real time, {args.segment_seconds:g} s segments\n"
    )
    print(
        f"{'meeting':>8} {'chunks':>7} {'rollscribe':>11} {'(client)':>9} {'batch':>8}"
        f" {'batch/ours':>11} {'WER ours':>9} {'WER batch':>10}"
    )
    for r in rows:
        print(
            f"{r['minutes']:6.1f} m {r['chunks']:7d} {r['rollscribe_latency_s']:9.1f} s"
            f" {r['rollscribe_latency_client_s']:7.1f} s {r['batch_latency_s']:6.1f} s"
            f" {r['batch_over_rollscribe']:10.1f}x {100 * r['rollscribe_wer']:8.1f}%"
            f" {100 * r['batch_wer']:9.1f}%"
        )
    save_results(
        "meeting_latency",
        {
            "speed": args.speed,
            "segment_s": args.segment_seconds,
            "threads": args.threads,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
