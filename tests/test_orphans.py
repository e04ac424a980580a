"""Incomplete uploads expire and free their space; silent meetings are marked abandoned;
neither touches data of a meeting that is still live."""

from __future__ import annotations

import time

import pytest
import requests

from tests.blob_stores import stored_bytes
from tests.conftest import TUS, create_meeting, metadata, tus_create, tus_patch
from tests.server_process import ServerProcess
from tests.test_hostile_chunks import _ogg


@pytest.fixture(scope="module")
def sweeping_server(tmp_path_factory):
    server = ServerProcess(
        tmp_path_factory.mktemp("orphans") / "data",
        extra=[
            "--upload-expiry-seconds",
            "2",
            "--abandon-after-seconds",
            "2",
            "--sweep-interval-seconds",
            "0.3",
        ],
    ).start()
    yield server
    server.stop()


def test_incomplete_upload_expires_and_space_is_reclaimed(sweeping_server):
    base = sweeping_server.url
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    stale = tus_create(
        base, 1000, metadata(meeting_id=meeting_id, track="mic", seq=0, start_ms=0)
    ).headers["Location"]
    assert tus_patch(stale, 0, b"x" * 400).status_code == 204
    chunk = _ogg(50)
    done = tus_create(
        base, len(chunk), metadata(meeting_id=meeting_id, track="mic", seq=1, start_ms=0)
    ).headers["Location"]
    assert tus_patch(done, 0, chunk).status_code == 204
    stale_id = stale.rsplit("/", 1)[1]
    assert stored_bytes(sweeping_server.data_dir, stale_id) == 400
    time.sleep(3.5)
    assert stored_bytes(sweeping_server.data_dir, stale_id) is None
    assert requests.head(stale, headers=TUS, timeout=10).status_code == 410
    chunks = {
        c["seq"]: c
        for c in requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()["chunks"]
    }
    assert chunks[0]["state"] == "cancelled" and "expired" in chunks[0]["error"]
    # The accepted chunk of the same live meeting is untouched.
    assert chunks[1]["state"] in ("queued", "waiting")
    assert requests.get(done, headers=TUS, timeout=10).content == chunk
    # The client can upload the expired chunk again.
    again = tus_create(base, 1000, metadata(meeting_id=meeting_id, track="mic", seq=0, start_ms=0))
    assert again.status_code == 201 and again.headers["Location"] != stale


def test_complete_uploads_no_meeting_keeps_expire_too(sweeping_server):
    base = sweeping_server.url
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    # A chunk that is not Ogg Opus: rejected, its bytes kept only for the expiry window.
    rejected = tus_create(
        base, 4, metadata(meeting_id=meeting_id, track="mic", seq=0, start_ms=0)
    ).headers["Location"]
    assert tus_patch(rejected, 0, b"abcd").status_code == 204
    # A plain upload (no chunk), and a concatenation of two parts that is no chunk either.
    plain = tus_create(base, 3).headers["Location"]
    assert tus_patch(plain, 0, b"xyz").status_code == 204
    parts = []
    for body in (b"a" * 100, b"b" * 100):
        part = tus_create(base, len(body), **{"Upload-Concat": "partial"}).headers["Location"]
        assert tus_patch(part, 0, body).status_code == 204
        parts.append(part)
    final = tus_create(
        base, None, **{"Upload-Concat": "final;" + " ".join(p.split(base)[1] for p in parts)}
    ).headers["Location"]
    ids = [u.rsplit("/", 1)[1] for u in (rejected, plain, final, *parts)]
    assert stored_bytes(sweeping_server.data_dir, ids[2]) == 200
    time.sleep(3.5)
    for upload_id, url in zip(ids, (rejected, plain, final, *parts), strict=True):
        assert stored_bytes(sweeping_server.data_dir, upload_id) is None, url
        assert requests.head(url, headers=TUS, timeout=10).status_code == 410, url
    chunk = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()["chunks"][0]
    assert chunk["state"] == "rejected" and "not an Ogg stream" in chunk["error"]


def test_meeting_without_chunks_is_abandoned_and_revived_by_one(sweeping_server):
    base = sweeping_server.url
    silent = create_meeting(base, tracks=["mic"])["id"]
    busy = create_meeting(base, tracks=["mic"])["id"]
    tus_create(base, 10, metadata(meeting_id=busy, track="mic", seq=0, start_ms=0))
    time.sleep(3.0)
    assert requests.get(f"{base}/meetings/{silent}", timeout=10).json()["state"] == "abandoned"
    assert requests.get(f"{base}/meetings/{busy}", timeout=10).json()["state"] == "recording"
    r = tus_create(base, 10, metadata(meeting_id=silent, track="mic", seq=0, start_ms=0))
    assert r.status_code == 201
    assert requests.get(f"{base}/meetings/{silent}", timeout=10).json()["state"] == "recording"
