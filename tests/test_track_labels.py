"""Track labels: what a transcript shows a track as (a Discord track is named by its user id
and shown under the display name)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import create_meeting, metadata, tus_create
from transcribe.transcript_formats import TranscriptLine, render


def view(base: str, meeting_id: str) -> dict:
    r = requests.get(f"{base}/meetings/{meeting_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def chunk_meta(meeting_id: str, track: str, seq: int, **extra: str) -> str:
    return metadata(meeting_id=meeting_id, track=track, seq=seq, start_ms=seq * 1000, **extra)


def test_labels_given_at_creation_show_in_the_view(protocol_server):
    base = protocol_server.url
    meeting = create_meeting(
        base, tracks=["301", "302"], track_labels={"301": "Ann Lee", "302": "Ben ⭐"}
    )
    assert meeting["track_labels"] == {"301": "Ann Lee", "302": "Ben ⭐"}
    assert create_meeting(base)["track_labels"] == {}


@pytest.mark.parametrize(
    "labels, says",
    [
        ({"a": ""}, "track_labels must be an object"),
        ({"a": "   "}, "track_labels must be an object"),
        ({"a": "x" * 101}, "track_labels must be an object"),
        ({"a": 7}, "track_labels must be an object"),
        ({"a": "tab\there"}, "track_labels must be an object"),
        ({"": "nobody"}, "track_labels must be an object"),
        (["a"], "track_labels must be an object"),
        ({"zed": "Zed"}, "not declared: ['zed']"),
    ],
)
def test_bad_labels_at_creation_are_refused_and_create_nothing(protocol_server, labels, says):
    base = protocol_server.url
    external_id = f"labels-{json.dumps(labels)}"
    body = {"tracks": ["a"], "track_labels": labels, "external_id": external_id}
    r = requests.post(f"{base}/meetings", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "ERR_INVALID_FIELD"
    assert says in r.json()["error"]["message"]
    # Nothing was created: the same external id makes a new meeting (201, not 200).
    r = requests.post(
        f"{base}/meetings", json={"tracks": ["a"], "external_id": external_id}, timeout=10
    )
    assert r.status_code == 201


def test_a_chunk_labels_its_track_and_a_later_one_renames_it(protocol_server):
    base = protocol_server.url
    meeting_id = create_meeting(base)["id"]  # no declared tracks: any speaker may join
    r = tus_create(base, 100, chunk_meta(meeting_id, "301", 0, track_label="Ann"))
    assert r.status_code == 201, r.text
    assert view(base, meeting_id)["track_labels"] == {"301": "Ann"}
    r = tus_create(base, 100, chunk_meta(meeting_id, "301", 1))  # no label: kept
    assert r.status_code == 201, r.text
    assert view(base, meeting_id)["track_labels"] == {"301": "Ann"}
    r = tus_create(base, 100, chunk_meta(meeting_id, "301", 2, track_label="Ann (away)"))
    assert r.status_code == 201, r.text
    assert view(base, meeting_id)["track_labels"] == {"301": "Ann (away)"}


def test_first_chunks_of_many_tracks_at_once_keep_every_label(protocol_server):
    base = protocol_server.url
    meeting_id = create_meeting(base)["id"]
    tracks = [str(300 + i) for i in range(12)]

    def first_chunk(track: str) -> int:
        meta = chunk_meta(meeting_id, track, 0, track_label=f"Speaker {track}")
        return tus_create(base, 100, meta).status_code

    with ThreadPoolExecutor(len(tracks)) as pool:
        assert set(pool.map(first_chunk, tracks)) == {201}
    assert view(base, meeting_id)["track_labels"] == {t: f"Speaker {t}" for t in tracks}


@pytest.mark.parametrize("label", ["", "   ", "x" * 101, "line\nbreak"])
def test_a_bad_label_in_metadata_is_refused_before_anything_is_stored(protocol_server, label):
    base = protocol_server.url
    meeting_id = create_meeting(base)["id"]
    r = tus_create(base, 100, chunk_meta(meeting_id, "301", 0, track_label=label))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "ERR_CHUNK_METADATA"
    assert "track_label" in r.json()["error"]["message"]
    assert "Location" not in r.headers
    meeting = view(base, meeting_id)
    assert meeting["chunks"] == [] and meeting["track_labels"] == {}


def test_every_format_shows_the_label_and_json_keeps_the_track():
    words = [{"start": 1.0, "end": 1.4, "word": " Hello", "probability": 0.9}]
    lines = [
        TranscriptLine(1000, 1400, "301", "Hello", words, "Ann <the host>"),
        TranscriptLine(2000, 2400, "302", "Hi", [], None),
    ]
    txt = render(lines, "txt", meeting_id="m", final=True)
    assert "] Ann <the host>: Hello" in txt and "] 302: Hi" in txt
    srt = render(lines, "srt", meeting_id="m", final=True)
    assert "[Ann <the host>] Hello" in srt and "[302] Hi" in srt
    vtt = render(lines, "vtt", meeting_id="m", final=True)
    assert "<v Ann &lt;the host&gt;>Hello" in vtt and "<v 302>Hi" in vtt
    segments = json.loads(render(lines, "json", meeting_id="m", final=True))["segments"]
    assert [(s["track"], s["speaker"]) for s in segments] == [
        ("301", "Ann <the host>"),
        ("302", "302"),
    ]
