"""One named test for each bug the fuzzer (tests/test_fuzz_api.py) found."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import TUS
from tests.server_process import ServerProcess
from tests.stored_state import sqlite_server, stored

OCTET = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = sqlite_server(tmp_path_factory.mktemp("fuzz-regressions") / "data", {}).start()
    yield process
    process.stop()


def test_creation_body_longer_than_upload_length_stores_nothing(server: ServerProcess) -> None:
    """Bug: POST /files with Upload-Length 1 and a 10-byte body answered 413 but left an
    upload (row and blob) nobody could find: the body's Content-Length was checked only
    after the upload was made."""
    before = stored(server.data_dir)
    for length_headers in ({"Upload-Length": "1"}, {"Upload-Defer-Length": "1"}):
        body = b"x" * (10 if "Upload-Length" in length_headers else 2 * 1024 * 1024)
        r = requests.post(
            server.url + "/files/",
            data=body,
            headers={**TUS, **OCTET, **length_headers},
            timeout=30,
        )
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] in ("ERR_BEYOND_LENGTH", "ERR_MAX_SIZE_EXCEEDED")
        assert "Location" not in r.headers
    assert stored(server.data_dir) == before


def test_creation_body_refused_after_creation_says_where_the_upload_is(
    server: ServerProcess,
) -> None:
    """Bug (same family): a creation-with-upload whose body failed its checksum answered
    460 with no Location, so the upload it had made was orphaned. The refusal now carries
    Location and Upload-Offset, and the client resumes there."""
    body = b"0123456789"
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    r = requests.post(
        server.url + "/files/",
        data=body,
        headers={**TUS, **OCTET, "Upload-Length": "10", "Upload-Checksum": f"sha1 {wrong}"},
        timeout=10,
    )
    assert r.status_code == 460
    assert r.json()["error"]["code"] == "ERR_CHECKSUM_MISMATCH"
    assert r.headers["Upload-Offset"] == "0"
    location = r.headers["Location"]
    head = requests.head(location, headers=TUS, timeout=10)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "0"
    patch = requests.patch(
        location, data=body, headers={**TUS, **OCTET, "Upload-Offset": "0"}, timeout=10
    )
    assert patch.status_code == 204
    assert patch.headers["Upload-Offset"] == "10"


def test_405_names_the_allowed_methods(server: ServerProcess) -> None:
    """Bug: 405 answers had no Allow header (RFC 9110 requires it), for a method the router
    does not route and for a POST on an upload without X-HTTP-Method-Override."""
    r = requests.delete(server.url + "/meetings", timeout=10)
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "ERR_METHOD_NOT_ALLOWED"
    assert "POST" in {m.strip() for m in r.headers["Allow"].split(",")}
    r = requests.post(server.url + "/files/nosuchupload", headers=TUS, timeout=10)
    assert r.status_code == 405
    assert {"PATCH", "DELETE", "HEAD"} <= {m.strip() for m in r.headers["Allow"].split(",")}


@pytest.mark.parametrize("track", ["\x1f", "\x1b", "mic\x00", "a\u200bb", "\u00a0"])
def test_meeting_tracks_follow_the_chunk_track_rule(server: ServerProcess, track: str) -> None:
    """Bug: a meeting took tracks no chunk could ever name (chunk metadata wants printable
    characters), e.g. "\\x1b", so it would wait for ever; and "\\x1f" matched the described
    pattern but was refused as blank (Python strips \\x1c-\\x1f). Both now follow one rule,
    storage/field_rules.py's is_track_name, which the description's pattern follows."""
    r = requests.post(server.url + "/meetings", json={"tracks": [track]}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "ERR_INVALID_FIELD"
    ok = requests.post(server.url + "/meetings", json={"tracks": ["mic 2", "système"]}, timeout=10)
    assert ok.status_code == 201
