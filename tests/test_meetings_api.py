"""Meetings API: creation idempotency, finalize rules, bad input with clear JSON errors."""

from __future__ import annotations

import requests

from tests.conftest import create_meeting, metadata, tus_create, tus_patch


def _error(r: requests.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()["error"]["code"]


def test_create_and_external_id_idempotency(protocol_server):
    base = protocol_server.url
    r = requests.post(
        base + "/meetings",
        json={"title": "Standup", "tracks": ["mic", "system"], "external_id": "rec-123"},
        timeout=10,
    )
    assert r.status_code == 201
    first = r.json()
    assert first["state"] == "recording" and first["chunks"] == []
    r = requests.post(base + "/meetings", json={"external_id": "rec-123"}, timeout=10)
    assert r.status_code == 200 and r.json()["id"] == first["id"]


def test_create_bad_input(protocol_server):
    base = protocol_server.url
    assert (
        _error(requests.post(base + "/meetings", data=b"{not json", timeout=10), 400)
        == "ERR_INVALID_JSON"
    )
    assert (
        _error(requests.post(base + "/meetings", json=[1, 2], timeout=10), 400)
        == "ERR_INVALID_JSON"
    )
    for body in (
        {"tracks": "mic"},
        {"tracks": ["a", "a"]},
        {"tracks": [""]},
        {"title": 5},
        {"external_id": "x" * 500},
        {"tracks": [str(i) for i in range(65)]},
    ):
        assert (
            _error(requests.post(base + "/meetings", json=body, timeout=10), 400)
            == "ERR_INVALID_FIELD"
        ), body
    r = requests.post(base + "/meetings", data=b"x" * (2 * 1024 * 1024), timeout=10)
    assert r.status_code == 413


def test_unknown_meeting_is_404_everywhere(protocol_server):
    base = protocol_server.url
    for method, path in [
        ("GET", "/meetings/m_nope"),
        ("GET", "/meetings/m_nope/transcript"),
        ("GET", "/meetings/m_nope/events"),
        ("POST", "/meetings/m_nope/finalize"),
        ("POST", "/meetings/m_nope/chunks/mic/0/retry"),
    ]:
        r = requests.request(method, base + path, json={"last_seq": {}}, timeout=10)
        assert _error(r, 404) == "ERR_MEETING_NOT_FOUND", path


def test_finalize_rules(protocol_server):
    base = protocol_server.url
    meeting = create_meeting(base, tracks=["mic"])
    url = f"{base}/meetings/{meeting['id']}/finalize"
    for body in (
        {},
        {"last_seq": []},
        {"last_seq": {"mic": -1}},
        {"last_seq": {"mic": "3"}},
        {"last_seq": {"mic": True}},
    ):
        assert _error(requests.post(url, json=body, timeout=10), 400) == "ERR_INVALID_FIELD"
    assert (
        _error(requests.post(url, json={"last_seq": {"other": 0}}, timeout=10), 400)
        == "ERR_UNKNOWN_TRACK"
    )
    # A chunk beyond the given last seq cannot be ignored.
    meta = metadata(meeting_id=meeting["id"], track="mic", seq=2, start_ms=0)
    assert tus_create(base, 5, meta).status_code == 201
    assert (
        _error(requests.post(url, json={"last_seq": {"mic": 1}}, timeout=10), 400)
        == "ERR_INVALID_FIELD"
    )
    r = requests.post(url, json={"last_seq": {"mic": 2}}, timeout=10)
    assert r.status_code == 200 and r.json()["state"] == "finalizing"
    assert r.json()["missing"] == [
        {"track": "mic", "seq": 0, "gap": False},
        {"track": "mic", "seq": 1, "gap": False},
    ]
    assert requests.post(url, json={"last_seq": {"mic": 2}}, timeout=10).status_code == 200
    assert (
        _error(requests.post(url, json={"last_seq": {"mic": 3}}, timeout=10), 409)
        == "ERR_FINALIZE_CONFLICT"
    )
    # After finalize, a seq past the last one is refused; one within it is accepted.
    late = metadata(meeting_id=meeting["id"], track="mic", seq=3, start_ms=0)
    assert _error(tus_create(base, 5, late), 409) == "ERR_SEQ_AFTER_FINALIZE"
    ok = metadata(meeting_id=meeting["id"], track="mic", seq=1, start_ms=0)
    assert tus_create(base, 5, ok).status_code == 201


def test_transcript_format_and_retry_errors(protocol_server):
    base = protocol_server.url
    meeting = create_meeting(base)
    assert (
        _error(
            requests.get(f"{base}/meetings/{meeting['id']}/transcript?format=doc", timeout=10), 400
        )
        == "ERR_INVALID_FORMAT"
    )
    assert (
        _error(
            requests.post(f"{base}/meetings/{meeting['id']}/chunks/mic/0/retry", timeout=10), 404
        )
        == "ERR_CHUNK_NOT_FOUND"
    )
    assert (
        _error(
            requests.post(f"{base}/meetings/{meeting['id']}/chunks/mic/x/retry", timeout=10), 400
        )
        == "ERR_INVALID_FIELD"
    )


def test_invalid_audio_is_rejected_with_reason_and_kept(protocol_server):
    base = protocol_server.url
    meeting = create_meeting(base, tracks=["mic"])
    body = b"this is not an ogg file at all"
    meta = metadata(meeting_id=meeting["id"], track="mic", seq=0, start_ms=0)
    url = tus_create(base, len(body), meta).headers["Location"]
    assert tus_patch(url, 0, body).status_code == 204
    chunk = requests.get(f"{base}/meetings/{meeting['id']}", timeout=10).json()["chunks"][0]
    assert chunk["state"] == "rejected"
    assert chunk["error"].startswith("not valid Ogg Opus:")
    assert chunk["bytes"] == len(body)
    assert requests.get(url, headers={"Tus-Resumable": "1.0.0"}, timeout=10).content == body
    # A complete chunk upload is part of the meeting: termination is refused.
    r = requests.delete(url, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    assert _error(r, 403) == "ERR_UPLOAD_ACCEPTED"


def test_terminated_chunk_can_be_created_again(protocol_server):
    base = protocol_server.url
    meeting = create_meeting(base, tracks=["mic"])
    meta = metadata(meeting_id=meeting["id"], track="mic", seq=0, start_ms=0)
    first = tus_create(base, 10, meta).headers["Location"]
    assert requests.delete(first, headers={"Tus-Resumable": "1.0.0"}, timeout=10).status_code == 204
    second = tus_create(base, 10, meta).headers["Location"]
    assert second != first
    chunks = requests.get(f"{base}/meetings/{meeting['id']}", timeout=10).json()["chunks"]
    assert len(chunks) == 1 and chunks[0]["state"] == "created"
    assert chunks[0]["upload_url"].endswith(second.rsplit("/", 1)[1])
