"""The whole path: real speech -> Ogg Opus segments on two tracks -> tuspy -> Whisper
workers -> finalize -> assembled transcript (and events)."""

from __future__ import annotations

import json
import time

import requests
from tusclient import client as tus_client

from tests.conftest import REFERENCE, create_meeting, words


def upload_segment(base_url: str, meeting_id: str, track: str, segment, start_ms: int) -> str:
    client = tus_client.TusClient(base_url + "/files/")
    uploader = client.uploader(
        str(segment.path),
        chunk_size=64 * 1024,
        retries=3,
        retry_delay=0.2,
        metadata={
            "meeting_id": meeting_id,
            "track": track,
            "seq": str(segment.seq),
            "start_ms": str(start_ms),
            "filename": segment.path.name,
            "filetype": "audio/ogg",
        },
    )
    uploader.upload()
    return uploader.url


def wait_state(base_url: str, meeting_id: str, state: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = requests.get(f"{base_url}/meetings/{meeting_id}", timeout=10).json()
        if view["state"] == state:
            return view
        time.sleep(0.3)
    raise AssertionError(f"meeting never reached {state}: {view}")


def test_two_tracks_end_to_end(transcribing_server, jfk_segments):
    base = transcribing_server.url
    segments = jfk_segments[3.0]  # 11 s of speech in four segments
    assert len(segments) == 4
    meeting = create_meeting(
        base, title="e2e", tracks=["mic", "system"], external_id="e2e-two-tracks"
    )
    meeting_id = meeting["id"]
    # The same recording on two tracks, the second one placed 20 s later in the meeting.
    offset_ms = 20_000
    for segment in segments:
        upload_segment(base, meeting_id, "mic", segment, segment.start_ms)
        upload_segment(base, meeting_id, "system", segment, segment.start_ms + offset_ms)

    partial = requests.get(f"{base}/meetings/{meeting_id}/transcript", timeout=10).json()
    assert partial["final"] is False

    last = len(segments) - 1
    r = requests.post(
        f"{base}/meetings/{meeting_id}/finalize",
        json={"last_seq": {"mic": last, "system": last}},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    view = wait_state(base, meeting_id, "complete")
    assert [c["state"] for c in view["chunks"]] == ["transcribed"] * 8
    assert all(c["bytes"] > 0 and 2.9 < c["duration_s"] < 3.1 for c in view["chunks"][:3])

    transcript = requests.get(
        f"{base}/meetings/{meeting_id}/transcript?format=json", timeout=10
    ).json()
    assert transcript["final"] is True
    by_track: dict[str, list[dict]] = {"mic": [], "system": []}
    for seg in transcript["segments"]:
        by_track[seg["track"]].append(seg)
    starts = [s["start"] for s in transcript["segments"]]
    assert starts == sorted(starts)
    for track, shift in (("mic", 0.0), ("system", offset_ms / 1000)):
        spoken = words(" ".join(s["text"] for s in by_track[track]))
        assert spoken == REFERENCE, (track, spoken)
        assert shift <= by_track[track][0]["start"] < shift + 1.5
        assert by_track[track][-1]["end"] <= shift + 11.5
    # One time-ordered transcript: all of mic (0-11 s) comes before system (20-31 s).
    assert [s["track"] for s in transcript["segments"]] == (
        ["mic"] * len(by_track["mic"]) + ["system"] * len(by_track["system"])
    )

    srt = requests.get(f"{base}/meetings/{meeting_id}/transcript?format=srt", timeout=10).text
    assert srt.startswith("1\n00:00:0") and "[system]" in srt and "00:00:2" in srt
    vtt = requests.get(f"{base}/meetings/{meeting_id}/transcript?format=vtt", timeout=10).text
    assert vtt.startswith("WEBVTT") and "<v mic>" in vtt
    txt = requests.get(f"{base}/meetings/{meeting_id}/transcript?format=txt", timeout=10).text
    assert txt.splitlines()[0].startswith("[00:00:0") and "mic:" in txt

    # Finalize again: same answer, no second assembly.
    again = requests.post(
        f"{base}/meetings/{meeting_id}/finalize",
        json={"last_seq": {"mic": last, "system": last}},
        timeout=10,
    )
    assert again.status_code == 200 and again.json()["state"] == "complete"
    assert create_meeting(base, external_id="e2e-two-tracks")["id"] == meeting_id

    # Events: replay from the log, and Last-Event-ID resumes after a given event.
    events = read_events(base, meeting_id)
    types = [e["type"] for e in events]
    assert types.count("meeting.completed") == 1
    assert types.count("chunk.transcribed") == 8
    assert types.index("meeting.finalizing") < types.index("meeting.completed")
    middle = events[len(events) // 2]
    rest = read_events(base, meeting_id, last_event_id=middle["id"])
    assert [e["id"] for e in rest] == [e["id"] for e in events if e["id"] > middle["id"]]


def read_events(base: str, meeting_id: str, last_event_id: int | None = None) -> list[dict]:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    r = requests.get(
        f"{base}/meetings/{meeting_id}/events?until=complete",
        headers=headers,
        stream=True,
        timeout=30,
    )
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events: list[dict] = []
    current: dict = {}
    for line in r.iter_lines(decode_unicode=True):
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["type"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            events.append(current)
            current = {}
    return events


def test_rejected_chunk_does_not_stop_the_meeting(transcribing_server, jfk_segments, tmp_path):
    base = transcribing_server.url
    segments = jfk_segments[3.0]  # 0-3 s, [3-6 s replaced by junk], 6-9 s
    meeting = create_meeting(base, tracks=["mic"])
    meeting_id = meeting["id"]
    bogus = tmp_path / "bogus.ogg"
    bogus.write_bytes(b"RIFF....WAVEfmt " + b"\0" * 500)

    class Fake:
        path = bogus
        seq = 1

    upload_segment(base, meeting_id, "mic", segments[0], segments[0].start_ms)
    upload_segment(base, meeting_id, "mic", Fake, 3000)
    upload_segment(base, meeting_id, "mic", segments[2], segments[2].start_ms)
    requests.post(
        f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": {"mic": 2}}, timeout=10
    )
    view = wait_state(base, meeting_id, "complete")
    states = {c["seq"]: c for c in view["chunks"]}
    assert states[1]["state"] == "rejected"
    assert "not valid Ogg Opus" in states[1]["error"]
    assert states[0]["state"] == states[2]["state"] == "transcribed"
    # The rejected chunk's bytes are kept.
    stored = requests.get(
        base + states[1]["upload_url"], headers={"Tus-Resumable": "1.0.0"}, timeout=10
    ).content
    assert stored == bogus.read_bytes()
    transcript = requests.get(f"{base}/meetings/{meeting_id}/transcript", timeout=10).json()
    assert transcript["gaps"] and transcript["gaps"][0]["seq"] == 1
    spoken = words(" ".join(s["text"] for s in transcript["segments"]))
    # tiny.en hears 3 s alone less well ("and so am I..."), so check placement, not spelling.
    assert spoken[:2] == ["and", "so"] and "americans" in spoken
    tail = " ".join(spoken[3:])  # seg 2 (6-9 s): "...your country can do for you"
    assert "can do for you" in tail
    assert all(s["start"] < 3.0 or s["start"] >= 6.0 for s in transcript["segments"])
