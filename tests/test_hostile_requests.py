"""Requests an attacker would send: each gets a clear 4xx JSON error, quickly, and the
server stays up for everyone else (issue 20's findings, each a regression test)."""

from __future__ import annotations

import time

import requests

from tests.conftest import TUS, create_meeting, metadata, tus_create


def _error(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()["error"]
    assert body["code"] == code
    return body["message"]


def test_an_absurd_last_seq_is_refused_at_once(protocol_server):
    base = protocol_server.url
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    for absurd in (10**30, 1_000_000, 1000):
        started = time.monotonic()
        r = requests.post(
            f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": {"mic": absurd}}, timeout=10
        )
        message = _error(r, 400, "ERR_INVALID_FIELD")
        assert "--max-missing-chunks" in message
        assert time.monotonic() - started < 1.0
    assert requests.get(f"{base}/healthz", timeout=2).status_code == 200
    # A finalize before the last chunks arrive, within the limit, is still fine.
    r = requests.post(
        f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": {"mic": 999}}, timeout=10
    )
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["state"] == "finalizing" and len(view["missing"]) == 1000


def test_integers_in_other_scripts_are_refused_not_a_500(protocol_server):
    base = protocol_server.url
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    for digit in ("²", "٣", "１"):  # superscript two, Arabic-Indic three, fullwidth one
        meta = metadata(meeting_id=meeting_id, track="mic", seq=digit, start_ms=0)
        _error(tus_create(base, 10, meta), 400, "ERR_CHUNK_METADATA")
        r = requests.post(f"{base}/meetings/{meeting_id}/chunks/mic/{digit}/retry", timeout=10)
        _error(r, 400, "ERR_INVALID_FIELD")
        r = requests.get(
            f"{base}/meetings/{meeting_id}/events",
            headers={"Last-Event-ID": digit.encode().decode("latin-1")},
            params={"last_event_id": digit},
            timeout=10,
        )
        _error(r, 400, "ERR_INVALID_FIELD")
    for huge in (str(2**63), str(2**31), "9" * 40):
        r = requests.get(
            f"{base}/meetings/{meeting_id}/events", headers={"Last-Event-ID": huge}, timeout=10
        )
        _error(r, 400, "ERR_INVALID_FIELD")


def test_deeply_nested_json_is_refused(protocol_server):
    base = protocol_server.url
    deep = "[" * 50_000 + "]" * 50_000
    r = requests.post(
        f"{base}/meetings", data=deep, headers={"Content-Type": "application/json"}, timeout=10
    )
    _error(r, 400, "ERR_INVALID_JSON")
    deep_object = '{"title": ' + "[" * 50_000 + "]" * 50_000 + "}"
    r = requests.post(
        f"{base}/meetings",
        data=deep_object,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    _error(r, 400, "ERR_INVALID_JSON")


def test_patch_to_made_up_ids_is_404(protocol_server):
    base = protocol_server.url
    for upload_id in ("x" * 8000, "a" * 64, "not-a-real-upload-id"):
        r = requests.patch(
            f"{base}/files/{upload_id}",
            data=b"abc",
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=10,
        )
        _error(r, 404, "ERR_UPLOAD_NOT_FOUND")


def test_only_named_origins_get_cors(protocol_server):
    base = protocol_server.url  # started with --cors-origins http://app.example
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "tus-resumable,upload-length",
    }
    for path in ("/files/", "/meetings", "/webhooks"):
        r = requests.options(
            base + path, headers={"Origin": "http://evil.example", **preflight}, timeout=10
        )
        assert "Access-Control-Allow-Origin" not in r.headers
        r = requests.options(
            base + path, headers={"Origin": "http://app.example", **preflight}, timeout=10
        )
        assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    for path in ("/metrics", "/meetings/x/transcript"):
        r = requests.get(base + path, headers={"Origin": "http://evil.example"}, timeout=10)
        assert "Access-Control-Allow-Origin" not in r.headers


def test_a_keyless_server_answers_only_to_its_own_names(protocol_server):
    port = protocol_server.url.rsplit(":", 1)[1]
    url = protocol_server.url + "/metrics"
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "10.0.0.1"):
        r = requests.get(url, headers={"Host": host}, timeout=10)
        _error(r, 403, "ERR_HOST_NOT_ALLOWED")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.2", f"[::1]:{port}"):
        assert requests.get(url, headers={"Host": host}, timeout=10).status_code == 200


def test_a_final_upload_names_each_partial_once(protocol_server):
    base = protocol_server.url
    r = tus_create(base, 6, **{"Upload-Concat": "partial"})
    part = r.headers["Location"]
    requests.patch(
        part,
        data=b"hello ",
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        timeout=10,
    )
    relative = "/files/" + part.rsplit("/", 1)[1]
    for named in ([relative] * 100, [part, relative]):
        r = requests.post(
            base + "/files/",
            headers={**TUS, "Upload-Concat": "final;" + " ".join(named)},
            timeout=10,
        )
        assert "repeated" in _error(r, 400, "ERR_INVALID_CONCAT")


def test_a_body_over_the_limit_is_a_json_413(protocol_server):
    r = requests.post(
        protocol_server.url + "/meetings",
        data=b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    _error(r, 413, "ERR_BODY_TOO_LARGE")
