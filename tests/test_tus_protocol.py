"""The tus 1.0.0 protocol against the server app run in this process (the fast path:
`tests/in_process_server.py`): every status code the issue names."""

from __future__ import annotations

import base64
import hashlib
import socket
import time

import pytest
import requests

from tests.blob_stores import on_s3, received_bytes
from tests.conftest import TUS, create_meeting, metadata, tus_create, tus_patch


def _upload(server, length: int = 10, meta: str | None = None) -> str:
    r = tus_create(server.url, length, meta)
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def _offset(url: str) -> int:
    r = requests.head(url, headers=TUS, timeout=10)
    assert r.status_code == 200
    return int(r.headers["Upload-Offset"])


def test_options_advertises_extensions_with_200(tus_server):
    r = requests.options(tus_server.url + "/files/", timeout=10)
    assert r.status_code == 200
    assert r.headers["Tus-Version"] == "1.0.0"
    assert r.headers["Tus-Resumable"] == "1.0.0"
    extensions = set(r.headers["Tus-Extension"].split(","))
    assert extensions == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    }
    assert int(r.headers["Tus-Max-Size"]) == 64 * 1024 * 1024
    assert {"sha1", "md5", "sha256"} <= set(r.headers["Tus-Checksum-Algorithm"].split(","))


def test_create_patch_head_download(tus_server):
    body = b"0123456789"
    url = _upload(tus_server, len(body), metadata(filename="a.bin", filetype="x/y"))
    assert "Upload-Expires" in tus_create(tus_server.url, 3).headers
    r = tus_patch(url, 0, body[:4])
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "4"
    assert "Upload-Expires" in r.headers
    head = requests.head(url, headers=TUS, timeout=10)
    assert head.headers["Upload-Offset"] == "4"
    assert head.headers["Upload-Length"] == "10"
    assert head.headers["Cache-Control"] == "no-store"
    assert "filename" in head.headers["Upload-Metadata"]
    assert tus_patch(url, 4, body[4:]).headers["Upload-Offset"] == "10"
    download = requests.get(url, headers=TUS, timeout=10)
    assert download.status_code == 200 and download.content == body


def test_every_412_carries_tus_version(tus_server):
    url = _upload(tus_server)
    for method, target in [
        ("POST", tus_server.url + "/files/"),
        ("HEAD", url),
        ("PATCH", url),
        ("DELETE", url),
        ("GET", url),
    ]:
        for version in (None, "0.2.2"):
            headers = {
                "Upload-Length": "1",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": "0",
            }
            if version:
                headers["Tus-Resumable"] = version
            r = requests.request(method, target, headers=headers, timeout=10)
            assert r.status_code == 412, (method, version, r.status_code)
            assert r.headers["Tus-Version"] == "1.0.0"
    assert _offset(url) == 0


def test_offset_mismatch_is_409_and_changes_nothing(tus_server):
    url = _upload(tus_server, 6)
    assert tus_patch(url, 0, b"abc").status_code == 204
    r = tus_patch(url, 1, b"xyz")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "ERR_MISMATCHED_OFFSET"
    assert _offset(url) == 3
    assert received_bytes(tus_server.data_dir, url) == b"abc"


def test_patch_with_wrong_content_type_is_415(tus_server):
    url = _upload(tus_server, 3)
    r = tus_patch(url, 0, b"abc", **{"Content-Type": "application/octet-stream"})
    assert r.status_code == 415 and _offset(url) == 0


def test_creation_body_must_be_offset_octet_stream(tus_server):
    r = requests.post(
        tus_server.url + "/files/",
        headers={**TUS, "Upload-Length": "3", "Content-Type": "text/plain"},
        data=b"abc",
        timeout=10,
    )
    assert r.status_code == 415


def test_creation_with_upload(tus_server):
    r = requests.post(
        tus_server.url + "/files/",
        headers={**TUS, "Upload-Length": "5", "Content-Type": "application/offset+octet-stream"},
        data=b"hello",
        timeout=10,
    )
    assert r.status_code == 201 and r.headers["Upload-Offset"] == "5"
    assert requests.get(r.headers["Location"], headers=TUS, timeout=10).content == b"hello"


def test_sizes_over_max_and_past_length_are_413(tus_server):
    assert tus_create(tus_server.url, 64 * 1024 * 1024 + 1).status_code == 413
    url = _upload(tus_server, 4)
    r = tus_patch(url, 0, b"12345")
    assert r.status_code == 413
    assert _offset(url) == 0


def test_unknown_upload_404_and_path_tricks(tus_server):
    for upload_id in ("doesnotexist12345", "..%2F..%2Fetc%2Fpasswd", "a%00b", "x" * 300):
        r = requests.head(tus_server.url + "/files/" + upload_id, headers=TUS, timeout=10)
        assert r.status_code == 404, upload_id


def test_terminated_upload_is_410(tus_server):
    url = _upload(tus_server, 4)
    r = requests.delete(url, headers=TUS, timeout=10)
    assert r.status_code == 204
    assert requests.head(url, headers=TUS, timeout=10).status_code == 410
    assert tus_patch(url, 0, b"abcd").status_code == 410


def test_expired_upload_is_410(tus_server):
    url = _upload(tus_server, 4)
    r = tus_patch(url, 0, b"ab")
    expires = r.headers["Upload-Expires"]
    assert expires.endswith("GMT")
    time.sleep(3.5)
    assert requests.head(url, headers=TUS, timeout=10).status_code == 410


def test_checksums(tus_server):
    for algorithm in ("sha1", "md5", "sha256"):
        url = _upload(tus_server, 6)
        good = base64.b64encode(hashlib.new(algorithm, b"abc").digest()).decode()
        bad = base64.b64encode(hashlib.new(algorithm, b"abd").digest()).decode()
        r = tus_patch(url, 0, b"abc", **{"Upload-Checksum": f"{algorithm} {bad}"})
        assert r.status_code == 460, algorithm
        assert _offset(url) == 0
        r = tus_patch(url, 0, b"abc", **{"Upload-Checksum": f"{algorithm} {good}"})
        assert r.status_code == 204 and r.headers["Upload-Offset"] == "3"
    url = _upload(tus_server, 3)
    assert tus_patch(url, 0, b"abc", **{"Upload-Checksum": "crc99 AAAA"}).status_code == 400
    assert tus_patch(url, 0, b"abc", **{"Upload-Checksum": "sha1 !!"}).status_code == 400
    assert _offset(url) == 0


def test_defer_length(tus_server):
    assert tus_create(tus_server.url, 3, **{"Upload-Defer-Length": "1"}).status_code == 400
    assert tus_create(tus_server.url, None).status_code == 400
    assert tus_create(tus_server.url, None, **{"Upload-Defer-Length": "2"}).status_code == 400
    r = tus_create(tus_server.url, None, **{"Upload-Defer-Length": "1"})
    url = r.headers["Location"]
    head = requests.head(url, headers=TUS, timeout=10)
    assert head.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in head.headers
    assert tus_patch(url, 0, b"abc").status_code == 204
    r = tus_patch(url, 3, b"de", **{"Upload-Length": "5"})
    assert r.status_code == 204
    assert requests.head(url, headers=TUS, timeout=10).headers["Upload-Length"] == "5"
    # A length once set never changes.
    url2 = _upload(tus_server, 5)
    r = tus_patch(url2, 0, b"ab", **{"Upload-Length": "7"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "ERR_LENGTH_ALREADY_SET"


def test_concatenation(tus_server):
    parts = []
    for piece in (b"hello ", b"world"):
        r = tus_create(tus_server.url, len(piece), **{"Upload-Concat": "partial"})
        assert r.status_code == 201
        assert tus_patch(r.headers["Location"], 0, piece).status_code == 204
        parts.append(r.headers["Location"])
    r = requests.post(
        tus_server.url + "/files/",
        headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    final = r.headers["Location"]
    head = requests.head(final, headers=TUS, timeout=10)
    assert head.headers["Upload-Length"] == "11" and head.headers["Upload-Concat"].startswith(
        "final;"
    )
    assert requests.get(final, headers=TUS, timeout=10).content == b"hello world"
    assert tus_patch(final, 11, b"x").status_code == 403
    # An unfinished part cannot be concatenated.
    r = tus_create(tus_server.url, 5, **{"Upload-Concat": "partial"})
    r = requests.post(
        tus_server.url + "/files/",
        headers={**TUS, "Upload-Concat": "final;" + r.headers["Location"]},
        timeout=10,
    )
    assert r.status_code == 400


def test_uploads_without_bytes_download_empty_and_concatenate(tus_server):
    """An upload's bytes may be stored only from its first PATCH on (the folder store makes
    its file then): one without bytes yet downloads as nothing, and empty parts (empty at
    creation, or deferred and then declared empty) join a concatenation as nothing."""
    started = _upload(tus_server, 5)
    r = requests.get(started, headers=TUS, timeout=10)
    assert r.status_code == 200 and r.content == b""
    empty = tus_create(tus_server.url, 0, **{"Upload-Concat": "partial"}).headers["Location"]
    deferred = tus_create(
        tus_server.url, None, **{"Upload-Concat": "partial", "Upload-Defer-Length": "1"}
    ).headers["Location"]
    assert tus_patch(deferred, 0, b"", **{"Upload-Length": "0"}).status_code == 204
    full = tus_create(tus_server.url, 3, **{"Upload-Concat": "partial"}).headers["Location"]
    assert tus_patch(full, 0, b"abc").status_code == 204
    r = requests.post(
        tus_server.url + "/files/",
        headers={**TUS, "Upload-Concat": f"final;{empty} {full} {deferred}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert requests.get(r.headers["Location"], headers=TUS, timeout=10).content == b"abc"


def test_malformed_and_oversized_metadata(tus_server):
    for bad in ("key not-base64!", "key a b", "dup YQ==,dup YQ==", "a YQ==,,b", "k\u00e9y YQ=="):
        r = tus_create(tus_server.url, 3, bad)
        assert r.status_code == 400, bad
        assert r.json()["error"]["code"] == "ERR_INVALID_METADATA"
    r = tus_create(tus_server.url, 3, "big " + "A" * 8000)
    assert r.status_code == 400 and r.json()["error"]["code"] == "ERR_METADATA_TOO_LARGE"


def test_bad_numbers_are_400(tus_server):
    for length in ("-1", "abc", "1e3", "99999999999999999999999"):
        assert tus_create(tus_server.url, None, **{"Upload-Length": length}).status_code == 400
    url = _upload(tus_server, 3)
    for offset in ("-1", "x", ""):
        assert tus_patch(url, 0, b"a", **{"Upload-Offset": offset}).status_code == 400
    assert _offset(url) == 0


def _raw_patch(url: str, offset: int, declared: int, body: bytes) -> None:
    """Sends a PATCH that declares `declared` bytes, sends `body` and hangs up."""
    host_port = url.split("//", 1)[1].split("/", 1)
    host, port = host_port[0].split(":")
    path = "/" + host_port[1]
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        ).encode()
        sock.sendall(head + body)
        time.sleep(0.5)


def test_resume_after_interrupted_patch(tus_server):
    data = bytes(range(256)) * 4096  # 1 MiB
    url = _upload(tus_server, len(data))
    _raw_patch(url, 0, len(data), data[:300_000])
    deadline = time.monotonic() + 5
    while _offset(url) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    offset = _offset(url)
    assert offset == 300_000  # what arrived was kept
    assert tus_patch(url, offset, data[offset:]).status_code == 204
    assert requests.get(url, headers=TUS, timeout=10).content == data


def test_stalled_patch_times_out_and_keeps_bytes(tus_server):
    url = _upload(tus_server, 100)
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            (
                f"PATCH /files/{url.rsplit('/', 1)[1]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                "Content-Type: application/offset+octet-stream\r\nContent-Length: 100\r\n\r\n"
            ).encode()
            + b"x" * 40
        )
        sock.settimeout(10)
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408"), reply
    assert _offset(url) == 40


def test_cors_preflight_and_exposed_headers(tus_server):
    r = requests.options(
        tus_server.url + "/files/",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "tus-resumable,upload-length",
        },
        timeout=10,
    )
    assert r.status_code in (200, 204)
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert "Upload-Offset" in r.headers["Access-Control-Allow-Headers"]
    r = tus_create(tus_server.url, 3, Origin="http://app.example")
    exposed = r.headers["Access-Control-Expose-Headers"]
    for name in ("Location", "Upload-Offset", "Upload-Length", "Tus-Resumable", "Retry-After"):
        assert name in exposed


def test_chunk_key_returns_existing_upload(tus_server):
    meeting = create_meeting(tus_server.url, tracks=["mic"])
    meta = metadata(meeting_id=meeting["id"], track="mic", seq=0, start_ms=0)
    first = tus_create(tus_server.url, 10, meta)
    assert tus_patch(first.headers["Location"], 0, b"12345").status_code == 204
    again = tus_create(tus_server.url, 10, meta)
    assert again.status_code == 201
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Upload-Offset"] == "5"
    conflict = tus_create(tus_server.url, 11, meta)
    assert conflict.status_code == 409
    assert "different Upload-Length" in conflict.json()["error"]["message"]
    view = requests.get(f"{tus_server.url}/meetings/{meeting['id']}", timeout=10).json()
    assert len(view["chunks"]) == 1 and view["chunks"][0]["bytes"] == 5


def test_chunk_metadata_errors(tus_server):
    meeting = create_meeting(tus_server.url, tracks=["mic"])
    cases = [
        (metadata(meeting_id="nope", track="mic", seq=0, start_ms=0), 404),
        (metadata(meeting_id=meeting["id"], track="other", seq=0, start_ms=0), 400),
        (metadata(meeting_id=meeting["id"], track="mic", seq=-1, start_ms=0), 400),
        (metadata(meeting_id=meeting["id"], track="mic", seq="x", start_ms=0), 400),
        (metadata(meeting_id=meeting["id"], track="mic", seq=0), 400),
    ]
    for meta, status in cases:
        r = tus_create(tus_server.url, 10, meta)
        assert r.status_code == status, (meta, r.text)
        assert "error" in r.json()


def test_two_concurrent_patches_one_gets_423(tus_server):
    url = _upload(tus_server, 1000)
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            (
                f"PATCH /files/{url.rsplit('/', 1)[1]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
                "Content-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\n\r\n"
            ).encode()
            + b"x" * 10
        )
        time.sleep(0.3)
        r = tus_patch(url, 0, b"y" * 1000)
        assert r.status_code in (409, 423)
    time.sleep(0.5)
    stored = received_bytes(tus_server.data_dir, url)
    assert stored is not None and set(stored) <= {ord("x")}


def test_tuspy_resumes_after_an_interrupted_patch(tus_server, tmp_path):
    from tusclient import client as tus_client

    data = bytes(range(256)) * 2048  # 512 KiB
    source = tmp_path / "blob.bin"
    source.write_bytes(data)
    client = tus_client.TusClient(tus_server.url + "/files/")
    first = client.uploader(str(source), chunk_size=64 * 1024)
    first.upload(stop_at=128 * 1024)  # the client stops here ...
    url = first.url
    _raw_patch(url, 128 * 1024, 64 * 1024, data[128 * 1024 : 150_000])  # ... a PATCH dies
    deadline = time.monotonic() + 5
    while _offset(url) == 128 * 1024 and time.monotonic() < deadline:
        time.sleep(0.05)
    # A new tuspy uploader given the URL asks HEAD for the offset and sends only the rest.
    resumed = client.uploader(str(source), url=url, chunk_size=64 * 1024)
    assert resumed.offset == 150_000
    resumed.upload()
    assert requests.get(url, headers=TUS, timeout=10).content == data


def test_a_patch_to_an_upload_whose_file_is_gone_is_500_bytes_lost(tus_server):
    """The folder store: the file of an upload the database knows was removed behind the
    server's back. The PATCH says what is wrong instead of failing anonymously."""
    if on_s3():
        pytest.skip("the folder store's files (S3's lost parts: tests/test_s3_blobs.py)")
    url = _upload(tus_server, 6)
    assert tus_patch(url, 0, b"abc").status_code == 204
    (tus_server.data_dir / "uploads" / url.rsplit("/", 1)[1]).unlink()
    r = tus_patch(url, 3, b"def")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "ERR_UPLOAD_BYTES_LOST"
    assert _offset(url) == 3


@pytest.mark.parametrize("stored", [b"12345", b""])
def test_a_deferred_length_declared_equal_to_the_bytes_stored_completes_the_upload(
    tus_server, stored
):
    """No byte follows a length declared equal to the offset (0 included): the upload is
    complete then, and its chunk goes through the intake's completion as after a last
    PATCH (these bytes are not Ogg Opus: rejected), instead of staying `uploading` (or
    `created`) for good."""
    meeting = create_meeting(tus_server.url, tracks=["mic"])
    meta = metadata(meeting_id=meeting["id"], track="mic", seq=0, start_ms=0)
    url = tus_create(tus_server.url, None, meta, **{"Upload-Defer-Length": "1"}).headers["Location"]
    if stored:
        assert tus_patch(url, 0, stored).status_code == 204
    declared = tus_patch(url, len(stored), b"", **{"Upload-Length": str(len(stored))})
    assert declared.status_code == 204, declared.text
    assert declared.headers["Upload-Offset"] == str(len(stored))
    head = requests.head(url, headers=TUS, timeout=10)
    assert head.headers["Upload-Length"] == head.headers["Upload-Offset"] == str(len(stored))
    view = requests.get(f"{tus_server.url}/meetings/{meeting['id']}", timeout=10).json()
    assert [chunk["state"] for chunk in view["chunks"]] == ["rejected"]
    # Declared again, the same: nothing more happens (no second completion).
    again = tus_patch(url, len(stored), b"", **{"Upload-Length": str(len(stored))})
    assert again.status_code == 204
    view = requests.get(f"{tus_server.url}/meetings/{meeting['id']}", timeout=10).json()
    assert [chunk["state"] for chunk in view["chunks"]] == ["rejected"]


def test_a_length_declared_complete_over_a_lost_file_is_500_bytes_lost(tus_server):
    """The declaration that completes an upload makes its bytes whole first: a file removed
    behind the server's back is said as lost bytes, and no length is recorded."""
    if on_s3():
        pytest.skip("the folder store's files (S3's lost parts: tests/test_s3_blobs.py)")
    url = tus_create(tus_server.url, None, **{"Upload-Defer-Length": "1"}).headers["Location"]
    assert tus_patch(url, 0, b"abc").status_code == 204
    (tus_server.data_dir / "uploads" / url.rsplit("/", 1)[1]).unlink()
    r = tus_patch(url, 3, b"", **{"Upload-Length": "3"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "ERR_UPLOAD_BYTES_LOST"
    head = requests.head(url, headers=TUS, timeout=10)
    assert head.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in head.headers
