"""Benchmark: the desktop recorder's cost while it records two tracks, and its upload lag.

Two runs, each against a rollscribe server on loopback (no workers: the recorder is measured):
- live: `rollscribe record --mic --system` on a PulseAudio daemon with null sinks, the
  planning meeting (two festival voices) played into them at real time for `--minutes`.
  Recorder CPU (user + system, seconds per minute of audio), peak RSS, and upload lag
  (segment closed -> last byte acknowledged, from the spool's state).
- long: the same meeting repeated to `--long-minutes` (default 120) replayed as two tracks
  at `--speed` times real time through the same encoder, spool and uploader: RSS after each
  tenth of the audio, to show memory stays flat over a two-hour recording.

Run: `./dev bench recorder_capture` (about 5 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import soundfile

from bench.pulse_daemon import PulseDaemon
from bench.server_under_test import ROOT, RollscribeServer, rss_kib, save_results
from bench.spoken_meeting import PLANNING, PLANNING_VOICES, SR, build_meeting

TUS = {"Tus-Resumable": "1.0.0"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def meeting_tracks(folder: Path, minutes: float) -> dict[str, Path]:
    """The planning meeting's two tracks, repeated to `minutes`, as WAV files."""
    meeting = build_meeting(PLANNING, PLANNING_VOICES, folder / "festival")
    out = {}
    for track, audio in meeting.tracks.items():
        repeats = int(np.ceil(minutes * 60 * SR / len(audio)))
        path = folder / f"{track}-{minutes:g}.wav"
        with soundfile.SoundFile(path, "w", SR, 1) as f:
            for _ in range(repeats):
                f.write(audio)
        out[track] = path
    return out


def recorder(
    server: RollscribeServer, spool: Path, env: dict[str, str], *args: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "record", "--server", server.url,
         "--spool", str(spool), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def upload_lags(spool: Path) -> list[float]:
    segments = json.loads((spool / "state.json").read_text())["segments"]
    return [s["uploaded_at"] - s["closed_at"] for s in segments if s.get("uploaded_at")]


def last_onset_ms(server_url: str, meeting_id: str, track: str, folder: Path) -> float:
    """Meeting time where the last chunk of a track holding a loud tone starts it."""
    from codec.decode import decode_to_16k_mono

    view = requests.get(f"{server_url}/meetings/{meeting_id}", timeout=10).json()
    chunks = sorted((c for c in view["chunks"] if c["track"] == track), key=lambda c: -c["seq"])
    for chunk in chunks:
        body = requests.get(server_url + chunk["upload_url"], headers=TUS, timeout=30).content
        path = folder / f"{track}-{chunk['seq']}.opus"
        path.write_bytes(body)
        audio = decode_to_16k_mono(path)
        loud = np.flatnonzero(np.abs(audio) > 0.6)
        if len(loud):
            # The tone is the last loud second: its first sample above the threshold.
            start = loud[loud >= loud[-1] - SR][0]
            return chunk["start_ms"] + start * 1000 / SR
    raise RuntimeError(f"no tone on {track}")


def live(folder: Path, minutes: float, segment_s: float) -> dict[str, object]:
    tracks = meeting_tracks(folder, minutes)
    pulse = PulseDaemon(folder / "pulse").start()
    server = RollscribeServer(folder / "live-data")
    try:
        process = recorder(
            server, folder / "live-spool", pulse.env,
            "--mic", "meeting_mic.monitor", "--system", "meeting_out",
            "--segment-seconds", str(segment_s),
        )  # fmt: skip
        assert process.stdout is not None and process.stdout.readline().strip()
        time.sleep(3)  # both devices open
        cpu_before = cpu_s(process.pid)
        players = [
            pulse.play("meeting_mic", tracks["alice"]),
            pulse.play("meeting_out", tracks["bob"]),
        ]
        started = time.monotonic()
        rss = []
        while any(p.poll() is None for p in players):
            rss.append(rss_kib(process.pid))
            time.sleep(1)
        audio_min = (time.monotonic() - started) / 60
        cpu = cpu_s(process.pid) - cpu_before
        peak = rss_kib(process.pid, "VmHWM")
        # At the end: one tone into both sinks at the same instant; where each track has it
        # says how far apart the tracks have drifted.
        tone = folder / "tone.wav"
        t = np.arange(SR) / SR
        soundfile.write(tone, (0.8 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
        time.sleep(2)
        pulse.play("both", tone).wait(10)
        time.sleep(2)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
        lags = upload_lags(folder / "live-spool")
        meeting_id = json.loads((folder / "live-spool" / "state.json").read_text())["meeting_id"]
        onsets = {
            track: last_onset_ms(server.url, meeting_id, track, folder)
            for track in ("mic", "system")
        }
    finally:
        server.stop()
        pulse.stop()
    return {
        "audio_minutes": round(audio_min, 2),
        "segment_seconds": segment_s,
        "cpu_s_per_audio_minute": round(cpu / audio_min, 2),
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_mib_first_last": [round(rss[0] / 1024, 1), round(rss[-1] / 1024, 1)],
        "segments": len(lags),
        "upload_lag_s_median": round(statistics.median(lags), 3),
        "upload_lag_s_max": round(max(lags), 3),
        "tone_at_end_ms": {k: round(v, 1) for k, v in onsets.items()},
        "tracks_apart_at_end_ms": round(abs(onsets["mic"] - onsets["system"]), 1),
    }


def long(folder: Path, minutes: float, speed: float, segment_s: float) -> dict[str, object]:
    tracks = meeting_tracks(folder, minutes)
    server = RollscribeServer(folder / "long-data")
    try:
        process = recorder(
            server, folder / "long-spool", dict(os.environ),
            "--track", f"mic={tracks['alice']}", "--track", f"system={tracks['bob']}",
            "--segment-seconds", str(segment_s), "--speed", str(speed),
        )  # fmt: skip
        assert process.stdout is not None and process.stdout.readline().strip()
        started = time.monotonic()
        marks: list[tuple[float, float]] = []  # (audio minutes recorded, RSS MiB)
        cpu = 0.0
        while process.poll() is None:
            audio_min = (time.monotonic() - started) * speed / 60
            try:
                marks.append((round(audio_min, 1), round(rss_kib(process.pid) / 1024, 1)))
                cpu = cpu_s(process.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(1)
        process.communicate(timeout=10)
    finally:
        server.stop()
    tenth = minutes / 10
    at_tenths = []
    for k in range(1, 10):
        near = min(marks, key=lambda m, k=k: abs(m[0] - k * tenth))
        at_tenths.append(near)
    return {
        "audio_minutes": minutes,
        "speed": speed,
        "cpu_s_per_audio_minute": round(cpu / minutes, 2),
        "rss_mib_at_audio_minutes": at_tenths,
        "rss_growth_mib_first_tenth_to_last": round(at_tenths[-1][1] - at_tenths[0][1], 1),
        "peak_rss_mib": max(m[1] for m in marks),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.0, help="live recording length")
    parser.add_argument("--long-minutes", type=float, default=120.0, help="0: skip")
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--segment-seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {"live": live(folder, args.minutes, args.segment_seconds)}
        if args.long_minutes > 0:
            results["long"] = long(folder, args.long_minutes, args.speed, args.segment_seconds)
    print(json.dumps(results, indent=2))
    print("saved", save_results("recorder_capture", results))


if __name__ == "__main__":
    main()
