"""Hostile and broken clients: stalled PATCHes, takeovers, and random request sequences."""

from __future__ import annotations

import base64
import hashlib
import socket
import time

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.blob_stores import received_bytes
from tests.conftest import TUS, tus_create, tus_patch


def _open_patch(url: str, offset: int, declared: int, first: bytes) -> socket.socket:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        (
            f"PATCH /files/{url.rsplit('/', 1)[1]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
            "Content-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        ).encode()
        + first
    )
    return sock


def test_stalled_patch_is_taken_over_by_the_resuming_client(protocol_server):
    url = tus_create(protocol_server.url, 100).headers["Location"]
    stalled = _open_patch(url, 0, 100, b"x" * 40)  # the client died; its socket lingers
    time.sleep(2.5)  # past the stall threshold (2 s), well before the read timeout
    started = time.monotonic()
    head = requests.head(url, headers=TUS, timeout=10)
    assert time.monotonic() - started < 1.0  # HEAD does not wait on the dead connection
    assert head.headers["Upload-Offset"] == "40"  # what arrived was made durable
    r = tus_patch(url, 40, b"y" * 60)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "100"
    stalled.settimeout(5)
    assert stalled.recv(4096).split(b"\r\n", 1)[0].endswith(b"409 Conflict")
    stalled.close()
    assert requests.get(url, headers=TUS, timeout=10).content == b"x" * 40 + b"y" * 60


def test_body_longer_than_declared_length_is_refused_and_changes_nothing(protocol_server):
    url = tus_create(protocol_server.url, 10).headers["Location"]
    assert tus_patch(url, 0, b"abc").status_code == 204

    # Chunked body with no Content-Length: the overflow is seen only while reading.
    def body():
        yield b"d" * 5
        yield b"e" * 5

    r = requests.patch(
        url,
        data=body(),
        headers={**TUS, "Upload-Offset": "3", "Content-Type": "application/offset+octet-stream"},
        timeout=10,
    )
    assert r.status_code == 413
    assert received_bytes(protocol_server.data_dir, url) == b"abc"


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "patch",
                "patch",
                "patch",
                "head",
                "bad_offset",
                "bad_checksum",
                "good_checksum",
                "bad_type",
            ]
        ),
        st.binary(min_size=0, max_size=40),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(length=st.integers(min_value=0, max_value=120), ops=OPS)
def test_random_request_sequences_keep_the_offset_invariant(protocol_server, length, ops):
    """Whatever a client sends, the stored bytes are exactly the accepted PATCH bodies, in
    order, HEAD's offset is their length, and it never passes Upload-Length."""
    url = tus_create(protocol_server.url, length).headers["Location"]
    accepted = b""
    for op, data in ops:
        offset = len(accepted)
        if op == "head":
            pass
        elif op == "bad_offset":
            assert tus_patch(url, offset + 1 + len(data), data).status_code in (409, 413)
        elif op == "bad_type":
            r = tus_patch(url, offset, data, **{"Content-Type": "text/plain"})
            assert r.status_code == 415
        else:
            headers = {}
            if op in ("bad_checksum", "good_checksum"):
                digest = hashlib.sha1(data if op == "good_checksum" else data + b"!").digest()
                headers["Upload-Checksum"] = "sha1 " + base64.b64encode(digest).decode()
            r = tus_patch(url, offset, data, **headers)
            if offset + len(data) > length:
                assert r.status_code == 413
            elif op == "bad_checksum":
                assert r.status_code == 460
            else:
                assert r.status_code == 204, r.text
                accepted += data
        head = requests.head(url, headers=TUS, timeout=10)
        assert int(head.headers["Upload-Offset"]) == len(accepted) <= length
    assert received_bytes(protocol_server.data_dir, url) == accepted
