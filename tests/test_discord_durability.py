"""The bot's recording survives a long server outage and a SIGKILL: nothing lost, nothing
uploaded twice, one meeting."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bench.transcript_scoring import normalize
from tests.discord_channel import Channel, FakeClock
from tests.discord_voice import USER_IDS, spoken_meeting, voice_packets
from tests.server_process import ROOT, ServerProcess
from tests.test_end_to_end import wait_state

# The bot's side: what the server stores it in is tested elsewhere (first pass only).
pytestmark = pytest.mark.storage_free

OUTAGE_S = 600.0


@pytest.fixture(scope="module")
def festival_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("festival")


@pytest.fixture(scope="module")
def meeting(festival_cache: Path):
    return spoken_meeting(festival_cache)


def assert_every_word_once(server: str, meeting_id: str, meeting) -> None:
    r = requests.get(f"{server}/meetings/{meeting_id}/transcript", timeout=30)
    lines = r.json()["segments"]
    by_id = {str(USER_IDS[s]): s for s in USER_IDS}
    for speaker in USER_IDS:
        said = " ".join(x["text"] for x in lines if by_id[x["track"]] == speaker)
        assert normalize(said) == normalize(meeting.reference(speaker)), speaker


def test_ten_minutes_without_the_server_lose_nothing(tmp_path, meeting):
    """The server is down from before the first packet until the upload thread has waited
    out 10 minutes of retries (its sleeps are counted, not waited: the old adapter's thread
    died after ~90 s of failures), then comes back: every word arrives."""
    server = ServerProcess(tmp_path / "data", workers=1)  # its port, nothing listening yet
    channel = Channel()
    recording, sink = channel.record(tmp_path / "spool", server.url, "Outage")
    slept: list[float] = []

    def counted_sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(0.01)

    recording.uploader.sleep = counted_sleep
    channel.play(sink, voice_packets(meeting, tmp_path))
    recording.stop_recording()
    recording._threads[0].join(timeout=60)  # every segment closed and spooled (slow CI)
    assert not recording._threads[0].is_alive()
    deadline = time.monotonic() + 60
    while sum(slept) < OUTAGE_S and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(slept) >= OUTAGE_S
    assert recording._threads[1].is_alive()  # the upload thread lives on
    assert recording.stats.segments_spooled == 5
    assert recording.meeting_id is None and recording.uploads_pending == 5
    server.start()
    try:
        view = recording.finish()
        assert recording.stats.segments_uploaded == 5
        wait_state(server.url, view["id"], "complete")
        assert_every_word_once(server.url, view["id"], meeting)
    finally:
        server.stop()


@pytest.mark.crash
def test_bot_killed_mid_meeting_continues_into_the_same_meeting(
    transcribing_server, tmp_path, festival_cache, meeting
):
    """SIGKILL during the long silence, a new bot process four meeting-seconds later: the
    closed segments the first left in its spool are uploaded once, seqs go on, and the
    second process records the rest of the meeting into the same meeting."""
    server = transcribing_server.url
    spool = tmp_path / "spool"
    speed = 2.0
    feeder = [sys.executable, "-m", "tests.discord_feeder", "--server", server]
    feeder += ["--spool", str(spool), "--festival-cache", str(festival_cache)]
    feeder += ["--speed", str(speed), "--start", str(FakeClock().start)]
    first = subprocess.Popen(feeder, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    origin = float(first.stdout.readline().split()[1])
    time.sleep(max(0.0, origin + 48.0 / speed - time.time()))
    first.kill()
    first.wait()
    state = json.loads(next(spool.glob("*/state.json")).read_text())
    closed = {(s["track"], s["seq"], s["start_ms"]) for s in state["segments"]}
    assert len(closed) == 4  # all closed in the silence: ann 2, ben 1, jfk 1 (none lost)
    second = subprocess.run(
        [*feeder, "--origin", str(origin), "--from-s", "52", "--finish"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert second.returncode == 0, second.stderr
    meeting_id = second.stdout.split("finalized")[1].split()[0]
    assert meeting_id == state["meeting_id"]
    view = wait_state(server, meeting_id, "complete")
    on_server = {(c["track"], c["seq"], c["start_ms"]) for c in view["chunks"]}
    assert closed < on_server  # every closed segment, once (the set is keyed by seq)
    seqs: dict[str, list[int]] = {}
    for c in view["chunks"]:
        seqs.setdefault(c["track"], []).append(c["seq"])
    assert all(sorted(s) == list(range(len(s))) for s in seqs.values()), seqs
    assert len(view["chunks"]) == 5  # and ben's last line, after the restart
    assert_every_word_once(server, meeting_id, meeting)


def test_a_full_spool_drops_new_speech_says_so_and_keeps_what_it_has(tmp_path, meeting, caplog):
    """Cap 60 KB, server down: the first segments fill the spool, later speech is not
    recorded (counted, logged), what was kept is intact and uploads once the server is
    back; recording resumes when uploads free space."""
    server = ServerProcess(tmp_path / "data", workers=0)
    channel = Channel()
    recording, sink = channel.record(tmp_path / "spool", server.url, "Full", max_bytes=60_000)
    recording.uploader.sleep = lambda s: time.sleep(0.01)
    # Paced so the muxer keeps up, and the cap is checked as the spool fills.
    channel.play(sink, voice_packets(meeting, tmp_path), pace_s=0.0005)
    recording.stop_recording()
    recording._threads[0].join()
    assert recording.stats.dropped_full_spool > 0
    assert "spool full" in caplog.text
    kept = sorted((tmp_path / "spool").rglob("*.opus"))
    assert kept and sum(p.stat().st_size for p in kept) < 60_000 + 30 * 64_000 // 8
    server.start()
    try:
        view = recording.finish()
        assert recording.stats.segments_uploaded == len(kept)
        stored = requests.get(f"{server.url}/meetings/{view['id']}", timeout=10).json()
        assert len(stored["chunks"]) == len(kept)
        assert "rejected" not in {c["state"] for c in stored["chunks"]}  # intact Ogg Opus
    finally:
        server.stop()
