"""The desktop recorder survives a SIGKILL and a network cut: one meeting, every segment
exactly once, the spool empty at the end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import REFERENCE, words
from tests.server_process import JFK, ROOT, ServerProcess


def _uploaded(spool) -> int:
    try:
        state = json.loads((spool / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(1 for s in state["segments"] if s["uploaded"])


@pytest.mark.crash
def test_recorder_resumes_after_sigkill_and_network_loss(tmp_path):
    server = ServerProcess(tmp_path / "data", workers=1).start()
    spool = tmp_path / "spool"
    out = tmp_path / "transcript.json"
    cmd = [
        sys.executable,
        "-m",
        "server.cli",
        "record",
        "--server",
        server.url,
        "--track",
        f"mic={JFK}",
        "--track",
        f"system={JFK}",
        "--segment-seconds",
        "2",
        "--spool",
        str(spool),
        "--realtime",
        "--wait",
        "--format",
        "json",
        "--output",
        str(out),
    ]
    try:
        first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        meeting_id = first.stdout.readline().strip()
        deadline = time.monotonic() + 30
        while _uploaded(spool) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)  # the client crashes midway
        first.wait(10)
        state = json.loads((spool / "state.json").read_text())
        assert not all(t["finished"] for t in state["tracks"].values())

        server.stop()  # and the network is gone for a while
        second = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert second.stdout.readline().strip() == meeting_id  # same meeting, resumed
        time.sleep(4)  # it keeps recording into the spool and retries with backoff
        server.start()
        assert second.wait(120) == 0

        transcript = json.loads(out.read_text())
        assert transcript["final"] is True
        for track in ("mic", "system"):
            spoken = words(
                " ".join(s["text"] for s in transcript["segments"] if s["track"] == track)
            )
            assert spoken == REFERENCE, track
        view = requests.get(f"{server.url}/meetings/{meeting_id}", timeout=10).json()
        assert view["state"] == "complete"
        keys = [(c["track"], c["seq"]) for c in view["chunks"]]
        assert len(keys) == len(set(keys)) == 12  # 2 tracks x 6 segments, each once
        assert {c["state"] for c in view["chunks"]} == {"transcribed"}
        assert view["last_seq"] == {"mic": 5, "system": 5}
        assert sorted(p.name for p in spool.iterdir()) == ["state.json"]  # spool empty
    finally:
        server.stop()


@pytest.mark.storage_free
def test_recorder_bad_arguments(tmp_path):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    for args, expected in (
        (["--track", "mic"], "--track"),
        (["--track", f"mic={tmp_path / 'missing.wav'}"], "--track"),
        ([], "--track"),
        (["--track", f"mic={audio}", "--speed", "0"], "--speed must be positive"),
    ):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "server.cli",
                "record",
                "--server",
                "http://127.0.0.1:9",
                "--spool",
                str(tmp_path / "s"),
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and expected in r.stderr, r.stderr


def test_full_spool_says_so_and_drops_nothing(tmp_path, transcribing_server):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "record",
            "--server",
            transcribing_server.url,
            "--track",
            f"mic={JFK}",
            "--segment-seconds",
            "2",
            "--spool",
            str(tmp_path / "s"),
            "--spool-max-bytes",
            "1",
            "--wait",
            "--format",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "spool full" in r.stderr and "no audio is dropped" in r.stderr
    transcript = json.loads(r.stdout.split("\n", 1)[1])
    assert words(" ".join(s["text"] for s in transcript["segments"])) == REFERENCE


@pytest.mark.crash
def test_finalize_only_after_a_crash_uploads_and_finishes(tmp_path, transcribing_server):
    spool = tmp_path / "spool"
    base = [
        sys.executable,
        "-m",
        "server.cli",
        "record",
        "--server",
        transcribing_server.url,
        "--spool",
        str(spool),
    ]
    first = subprocess.Popen(
        [*base, "--track", f"mic={JFK}", "--segment-seconds", "2", "--realtime"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    meeting_id = first.stdout.readline().strip()
    deadline = time.monotonic() + 30
    while _uploaded(spool) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    closed = len(json.loads((spool / "state.json").read_text())["segments"])
    r = subprocess.run(
        [*base, "--finalize-only", "--wait", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n", 1)[0] == meeting_id
    assert json.loads(r.stdout.split("\n", 1)[1])["final"] is True
    view = requests.get(f"{transcribing_server.url}/meetings/{meeting_id}", timeout=10).json()
    assert view["state"] == "complete"
    # Every closed segment arrived and nothing more was recorded.
    assert view["last_seq"] == {"mic": closed - 1} and len(view["chunks"]) == closed
    assert sorted(p.name for p in spool.iterdir()) == ["state.json"]


@pytest.mark.storage_free
def test_finalize_only_needs_a_spool(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "record",
            "--server",
            "http://127.0.0.1:9",
            "--spool",
            str(tmp_path / "none"),
            "--finalize-only",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "--finalize-only needs an existing spool" in r.stderr
