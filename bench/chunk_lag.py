"""Benchmark: chunk lag with N simultaneous real-time meetings, and the largest N that keeps up.

A server with its default worker pool (one worker process, two Whisper threads) receives N
meetings at once, each a desktop-recorder-like client that uploads one 30 s Ogg Opus segment
of speech with tuspy every 30 s of wall clock (no acceleration: this is the live load). The
meetings start staggered across one segment period, as real meetings do. Chunk lag is from
the client's last PATCH being acknowledged to the chunk's `transcribed_at`. N doubles
(1, 2, 4, ...) until the p95 lag exceeds one segment length: past that point the backlog
grows with every segment and the meeting falls further behind.
Run: `./dev bench chunk_lag [--minutes 1]` (about 13 minutes at the defaults: each level
records a minute of speech in real time, staggered over 30 s, then drains; 2 minute
meetings gave the same answer in 22 minutes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
import soundfile
from tusclient import client as tus_client

from bench.server_under_test import (
    RESULTS,
    RollscribeServer,
    save_results,
    wait_for_worker,
)
from bench.speech_corpus import SR, build_corpus
from codec.segmenter import SegmentFile, encode_segments

TRACK = "room"


def live_meeting(
    base: str,
    segments: list[SegmentFile],
    segment_s: float,
    start_at: float,
    uploaded: dict[tuple[str, int], float],
    errors: list[str],
) -> None:
    """One meeting's client: segment k is uploaded when its 30 s have been 'recorded'."""
    try:
        meeting_id = requests.post(f"{base}/meetings", json={"tracks": [TRACK]}, timeout=30).json()[
            "id"
        ]
        tus = tus_client.TusClient(f"{base}/files/")
        for segment in segments:
            delay = start_at + (segment.seq + 1) * segment_s - time.time()
            if delay > 0:
                time.sleep(delay)
            tus.uploader(
                str(segment.path),
                chunk_size=1 << 20,
                metadata={
                    "meeting_id": meeting_id,
                    "track": TRACK,
                    "seq": str(segment.seq),
                    "start_ms": str(segment.start_ms),
                    "filename": segment.path.name,
                    "filetype": "audio/ogg",
                },
            ).upload()
            uploaded[(meeting_id, segment.seq)] = time.time()
        requests.post(
            f"{base}/meetings/{meeting_id}/finalize",
            json={"last_seq": {TRACK: segments[-1].seq}},
            timeout=30,
        ).raise_for_status()
    except Exception as exc:  # reported in the table: a failed client must not look like speed
        errors.append(repr(exc))


def transcribed_times(
    base: str, meeting_ids: set[str], timeout: float
) -> dict[tuple[str, int], float]:
    """Waits until every chunk of every meeting is transcribed (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    done: dict[tuple[str, int], float] = {}
    while True:
        pending = 0
        for meeting_id in meeting_ids:
            view = requests.get(f"{base}/meetings/{meeting_id}", timeout=30).json()
            for chunk in view["chunks"]:
                if chunk["transcribed_at"] is not None:
                    done[(meeting_id, chunk["seq"])] = chunk["transcribed_at"]
                else:
                    pending += 1
        if pending == 0 or time.monotonic() > deadline:
            return done
        time.sleep(1.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_level(
    base: str, n: int, segments: list[SegmentFile], segment_s: float
) -> dict[str, float | int | list[str]]:
    uploaded: dict[tuple[str, int], float] = {}
    errors: list[str] = []
    start = time.time() + 1.0
    clients = [
        threading.Thread(
            target=live_meeting,
            args=(base, segments, segment_s, start + i * segment_s / n, uploaded, errors),
            name=f"meeting-{i}",
        )
        for i in range(n)
    ]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    meeting_ids = {meeting_id for meeting_id, _ in uploaded}
    # Generous: an overloaded level still drains so that its lag is measured, not guessed.
    transcribed = transcribed_times(base, meeting_ids, timeout=max(120.0, 6.0 * n * len(segments)))
    lags = [transcribed[key] - at for key, at in uploaded.items() if key in transcribed]
    return {
        "meetings": n,
        "chunks": len(uploaded),
        "transcribed": len(lags),
        "p50_s": statistics.median(lags) if lags else float("nan"),
        "p95_s": percentile(lags, 0.95) if lags else float("nan"),
        "max_s": max(lags) if lags else float("nan"),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=1.0, help="length of each meeting")
    parser.add_argument("--segment-seconds", type=float, default=30.0)
    parser.add_argument("--max-meetings", type=int, default=64)
    args = parser.parse_args()
    segment_s = args.segment_seconds
    rows: list[dict[str, float | int | list[str]]] = []
    largest_keeping_up = 0
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = build_corpus(args.minutes, RESULTS.parent / "work" / "corpus")
        audio_file = tmp / "meeting.flac"
        soundfile.write(audio_file, corpus.audio, SR)
        segments = encode_segments(audio_file, tmp / "segments", segment_s)
        # The server's default pool; `--workers 1` only undoes server_under_test's `--workers 0`.
        server = RollscribeServer(tmp / "data", "--workers", "1")
        try:
            wait_for_worker(tmp / "data")
            n = 1
            while n <= args.max_meetings:
                row = run_level(server.url, n, segments, segment_s)
                rows.append(row)
                keeps_up = not row["errors"] and float(row["p95_s"]) < segment_s
                row["keeps_up"] = keeps_up
                print(
                    f"N={n:3d}: {row['chunks']} chunks, lag p50 {row['p50_s']:.1f} s,"
                    f" p95 {row['p95_s']:.1f} s, max {row['max_s']:.1f} s"
                    f"{'' if keeps_up else '  <- falls behind'}"
                    f"{'  errors: ' + '; '.join(row['errors'][:3]) if row['errors'] else ''}",
                    flush=True,
                )
                if not keeps_up:
                    break
                largest_keeping_up = n
                n *= 2
        finally:
            server.stop()
    print(
        f"\nchunk lag (upload complete -> transcribed), {segment_s:g} s segments in real time,"
        f" {len(segments)} per meeting, default pool (1 worker, 2 threads, tiny.en int8)\n"
    )
    print(f"{'meetings':>8} {'chunks':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7}  keeps up")
    for r in rows:
        print(
            f"{r['meetings']:8d} {r['chunks']:7d} {r['p50_s']:7.1f} {r['p95_s']:7.1f}"
            f" {r['max_s']:7.1f}  {'yes' if r['keeps_up'] else 'no'}"
        )
    elapsed = time.monotonic() - began
    print(f"\nlargest N that keeps up (p95 lag < {segment_s:g} s): {largest_keeping_up}")
    print(f"benchmark wall time: {elapsed / 60:.1f} min")
    save_results(
        "chunk_lag",
        {
            "segment_s": segment_s,
            "segments_per_meeting": len(segments),
            "largest_n_keeping_up": largest_keeping_up,
            "wall_time_s": elapsed,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
