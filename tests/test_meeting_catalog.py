"""GET /meetings (newest first, paged, by state) and DELETE /meetings/{id}."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from tests.blob_stores import stored_bytes
from tests.conftest import create_meeting, metadata, tus_create, tus_patch


def page(base: str, **params: object) -> dict:
    r = requests.get(f"{base}/meetings", params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def upload_chunk(base: str, meeting_id: str, track: str, seq: int, body: bytes) -> str:
    meta = metadata(meeting_id=meeting_id, track=track, seq=seq, start_ms=seq * 3000)
    r = tus_create(base, len(body), meta)
    assert r.status_code == 201, r.text
    url = r.headers["Location"]
    assert tus_patch(url, 0, body).status_code == 204
    return url


def wait_chunk_state(base: str, meeting_id: str, states: set[str]) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()
        if view["chunks"] and all(c["state"] in states for c in view["chunks"]):
            return view
        time.sleep(0.1)
    raise AssertionError(view)


def test_pages_newest_first_with_states_tracks_and_duration(protocol_server, jfk_segments):
    base = protocol_server.url
    ids = [create_meeting(base, title=f"catalog {i}")["id"] for i in range(5)]
    segment = jfk_segments[3.0][0]
    upload_chunk(base, ids[1], "mic", 0, segment.path.read_bytes())
    wait_chunk_state(base, ids[1], {"queued"})
    r = requests.post(f"{base}/meetings/{ids[3]}/finalize", json={"last_seq": {}}, timeout=10)
    assert r.status_code == 200, r.text
    seen: list[dict] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        got = page(base, **params)
        assert len(got["meetings"]) <= 2
        seen += got["meetings"]
        after = got["next"]
        if after is None:
            break
    mine = [m for m in seen if m["id"] in ids]
    assert [m["id"] for m in mine] == ids[::-1]  # newest first, each once
    created = [m["created_at"] for m in seen]
    assert created == sorted(created, reverse=True)
    with_chunk = next(m for m in mine if m["id"] == ids[1])
    assert with_chunk["chunks"] == 1 and with_chunk["tracks"] == ["mic"]
    assert 2.9 < with_chunk["duration_s"] < 3.1
    complete = page(base, state="complete", limit=100)["meetings"]
    assert ids[3] in {m["id"] for m in complete}
    assert all(m["state"] == "complete" for m in complete)
    assert not {ids[0], ids[1]} & {m["id"] for m in complete}


@pytest.mark.parametrize(
    "params, says",
    [
        ({"limit": "0"}, "limit must be an integer from 1 to 100"),
        ({"limit": "101"}, "limit must be an integer from 1 to 100"),
        ({"limit": "²"}, "limit must be an integer from 1 to 100"),
        ({"state": "deleted"}, "state must be one of"),
        ({"after": "not-a-cursor"}, "after must be a `next` from a meetings page"),
        ({"after": base64.urlsafe_b64encode(b"nan|m_x").decode()}, "after must be a `next`"),
    ],
)
def test_bad_list_parameters_are_400(protocol_server, params, says):
    r = requests.get(f"{protocol_server.url}/meetings", params=params, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "ERR_INVALID_FIELD"
    assert says in r.json()["error"]["message"]


def test_delete_removes_audio_transcript_rows_and_says_so(protocol_server, jfk_segments):
    base = protocol_server.url
    meeting_id = create_meeting(base, title="to delete")["id"]
    url = upload_chunk(base, meeting_id, "mic", 0, jfk_segments[3.0][0].path.read_bytes())
    wait_chunk_state(base, meeting_id, {"queued"})
    upload_id = url.rsplit("/", 1)[1]
    assert stored_bytes(protocol_server.data_dir, upload_id)  # on disk or in S3
    r = requests.delete(f"{base}/meetings/{meeting_id}", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"deleted": meeting_id, "chunks": 1}
    assert requests.get(f"{base}/meetings/{meeting_id}", timeout=10).status_code == 404
    assert requests.get(f"{base}/meetings/{meeting_id}/transcript", timeout=10).status_code == 404
    assert meeting_id not in {m["id"] for m in page(base, limit=100)["meetings"]}
    assert stored_bytes(protocol_server.data_dir, upload_id) is None  # the audio is gone
    assert requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=10).status_code in (
        404,
        410,
    )
    r = requests.delete(f"{base}/meetings/{meeting_id}", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ERR_MEETING_NOT_FOUND"
    # A recorder still uploading to it is told the meeting is gone.
    r = tus_create(base, 10, metadata(meeting_id=meeting_id, track="mic", seq=1, start_ms=3000))
    assert r.status_code == 404


def test_delete_is_refused_while_a_chunk_is_being_uploaded(protocol_server):
    base = protocol_server.url
    meeting_id = create_meeting(base)["id"]
    meta = metadata(meeting_id=meeting_id, track="mic", seq=0, start_ms=0)
    url = tus_create(base, 1000, meta).headers["Location"]
    assert tus_patch(url, 0, b"OggS" + b"\0" * 96).status_code == 204  # 100 of 1000 bytes
    r = requests.delete(f"{base}/meetings/{meeting_id}", timeout=10)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "ERR_MEETING_BUSY" and "mic/0 uploading" in error["message"]
    view = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()
    assert view["chunks"][0]["bytes"] == 100  # nothing of it touched
