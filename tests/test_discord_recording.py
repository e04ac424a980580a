"""Three Discord speakers through the bot's receive sink into a meeting: the receive
extension's own packet and data types, discord.py's own members, real libopus speech, a
real server transcribing it.

What Discord itself would add (the voice gateway, UDP, transport encryption) is not here:
no Discord connection exists on the test machines."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from bench.transcript_scoring import normalize
from tests.discord_channel import Channel
from tests.discord_voice import DISPLAY_NAMES, SCRIPT, USER_IDS, spoken_meeting, voice_packets
from tests.test_end_to_end import wait_state

# The bot's side: what the server stores it in is tested elsewhere (first pass only).
pytestmark = pytest.mark.storage_free


@pytest.fixture(scope="module")
def meeting(tmp_path_factory: pytest.TempPathFactory):
    return spoken_meeting(tmp_path_factory.mktemp("festival"))


@pytest.fixture(scope="module")
def channel() -> Channel:
    return Channel()


def record(server: str, spool: Path, meeting, channel: Channel, tmp: Path, pause_s: float) -> dict:
    recording, sink = channel.record(spool, server, "Budget", pause_s=pause_s)
    channel.play(sink, voice_packets(meeting, tmp))
    view = recording.finish()
    assert view["state"] in ("finalizing", "complete"), view
    return {"recording": recording, "meeting_id": recording.meeting_id}


def transcript_lines(server: str, meeting_id: str) -> list[dict]:
    r = requests.get(f"{server}/meetings/{meeting_id}/transcript", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["segments"]


def test_three_speakers_with_a_late_joiner_under_their_names(
    transcribing_server, meeting, channel, tmp_path
):
    server = transcribing_server.url
    done = record(server, tmp_path / "spool", meeting, channel, tmp_path, pause_s=10.0)
    view = wait_state(server, done["meeting_id"], "complete")
    lines = transcript_lines(server, done["meeting_id"])
    by_id = {str(USER_IDS[s]): s for s in USER_IDS}
    # Every reference word, per speaker, in order.
    for speaker in USER_IDS:
        said = " ".join(x["text"] for x in lines if by_id[x["track"]] == speaker)
        assert normalize(said) == normalize(meeting.reference(speaker)), speaker
    # Labelled with display names; the user ids stay the tracks.
    assert view["track_labels"] == {str(USER_IDS[s]): DISPLAY_NAMES[s] for s in USER_IDS}
    assert all(x["speaker"] == DISPLAY_NAMES[by_id[x["track"]]] for x in lines)
    txt = requests.get(
        f"{server}/meetings/{done['meeting_id']}/transcript", params={"format": "txt"}, timeout=30
    ).text
    assert "John F. Kennedy: And so" in txt and str(USER_IDS["jfk"]) not in txt
    # Each line at its time (within 0.5 s of its first sound), speakers in spoken order.
    starts = sorted((x["start"], by_id[x["track"]]) for x in lines)
    for line in meeting.lines:
        assert any(s == line.track and abs(t - line.start_s) <= 0.5 for t, s in starts), line
    order = [s for _t, s in starts]
    turns = [s for i, s in enumerate(order) if i == 0 or order[i - 1] != s]
    assert turns == [s for s, _text, _pause in SCRIPT]
    # Pauses up to 10 s share a segment; the long silences are not uploaded.
    chunks: dict[str, list[dict]] = {}
    for chunk in view["chunks"]:
        chunks.setdefault(by_id[chunk["track"]], []).append(chunk)
    assert {s: len(c) for s, c in chunks.items()} == {"ann": 2, "ben": 2, "jfk": 1}
    uploaded_s = sum(c["duration_s"] for cs in chunks.values() for c in cs)
    speech_s = sum(x.end_s - x.start_s for x in meeting.lines)
    assert uploaded_s < speech_s + 20.0  # ann's and ben's 7 s pauses, nothing of the rest
    # The spool holds nothing once the meeting is finalized.
    assert not list((tmp_path / "spool").rglob("*.opus"))
