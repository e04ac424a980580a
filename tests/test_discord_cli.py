"""`rollscribe discord`'s bad input, and a segment the server refuses for good."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from client.spool import SegmentState, Spool, SpoolState, TrackState
from client.spool_uploader import SpoolUploader
from tests.conftest import create_meeting
from tests.server_process import ROOT


def run_discord(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    if token is not None:
        env["DISCORD_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "discord", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.storage_free
@pytest.mark.parametrize(
    "args, token, says",
    [
        ([], None, "no bot token: set $DISCORD_TOKEN or pass --token-file FILE"),
        ([], "  ", "no bot token"),
        (["--token-file", "/nonexistent/token"], None, "cannot read --token-file"),
        (["--segment-seconds", "0"], "t", "--segment-seconds must be positive"),
        (["--pause-seconds", "-1"], "t", "--pause-seconds must be positive"),
        (["--leave-after", "0"], "t", "--leave-after must be positive"),
        (["--spool-max-bytes", "0"], "t", "--spool-max-bytes must be positive"),
    ],
)
def test_bad_arguments_stop_with_one_line_before_connecting(args, token, says):
    r = run_discord("--server", "http://127.0.0.1:9", *args, token=token)
    assert r.returncode != 0
    assert says in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.storage_free
def test_the_token_is_never_a_flag():
    r = run_discord("--server", "http://127.0.0.1:9", "--token", "secret", token="t")
    assert r.returncode == 2 and "unrecognized arguments: --token secret" in r.stderr


def test_a_segment_refused_for_good_is_set_aside_and_said(protocol_server, tmp_path: Path):
    """The meeting was completed elsewhere: the server will never take this segment (409
    ERR_MEETING_CLOSED). It stays in the spool marked failed, is said, and the uploader
    goes on to the end instead of retrying for ever."""
    base = protocol_server.url
    meeting_id = create_meeting(base)["id"]
    r = requests.post(f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": {}}, timeout=10)
    assert r.status_code == 200, r.text
    spool = Spool(tmp_path, 1 << 20)
    segment = tmp_path / "301-000000.opus"
    segment.write_bytes((ROOT / "tests" / "discord_voice.py").read_bytes()[:2000])
    state = SpoolState(server=base, meeting_id=meeting_id)
    state.tracks["301"] = TrackState(next_seq=1, label="Ann")
    state.segments.append(SegmentState(track="301", seq=0, start_ms=0, path=str(segment)))
    said: list[str] = []
    uploader = SpoolUploader(spool, state, threading.Lock(), say=said.append)
    uploader.run(more_to_come=lambda: False)
    assert state.segments[0].failed is not None
    assert "ERR_MEETING_CLOSED" in state.segments[0].failed
    assert any("refused 301 segment 0 for good" in s for s in said)
    assert segment.exists()  # kept: nothing is deleted the server does not have
    assert Spool(tmp_path, 1 << 20).load().segments[0].failed  # and durable
