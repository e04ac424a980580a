"""Per-key limits: recording meetings and webhooks (403 past them), upload bytes per UTC day
(429 with Retry-After, checked before any byte or row is stored); server flags give the
defaults, a keys file line overrides them, and a key-less server applies them to its owner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from server.auth import fingerprint
from tests.conftest import TUS, tus_create, tus_patch
from tests.key_helpers import auth, rows
from tests.server_process import ROOT, ServerProcess, free_port
from tests.test_webhooks import SECRET

KEY_A = "limited-key-0123456789"  # the server's defaults
KEY_B = "roomier-key-0123456789"  # its own limits, in the keys file
FLAGS = [
    "--max-open-meetings-per-key", "2",
    "--max-upload-bytes-per-key-per-day", "1000",
    "--max-webhooks-per-key", "1",
    "--webhook-allow-networks", "127.0.0.0/8",
]  # fmt: skip
HOOK = {"url": "http://127.0.0.1:9/hook", "secret": SECRET, "events": ["meeting.failed"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = tmp_path_factory.mktemp("limit-keys") / "keys"
    keys.write_text(
        f"{KEY_A} name=a\n"
        f"{KEY_B} name=b max_open_meetings=3 max_upload_bytes_per_day=0 max_webhooks=2\n"
    )
    process = ServerProcess(
        tmp_path_factory.mktemp("limits") / "data", extra=[*FLAGS, "--api-keys-file", str(keys)]
    ).start()
    yield process
    process.stop()


def post(server: ServerProcess, path: str, key: str, body: dict) -> requests.Response:
    return requests.post(server.url + path, json=body, headers=auth(key), timeout=10)


def refused(response: requests.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and message in error["message"], error


def test_recording_meetings_per_key(server):
    first = post(server, "/meetings", KEY_A, {"external_id": "e1", "tracks": ["mic"]})
    assert first.status_code == 201
    assert post(server, "/meetings", KEY_A, {"external_id": "e2"}).status_code == 201
    third = post(server, "/meetings", KEY_A, {"external_id": "e3"})
    refused(third, 403, "ERR_OPEN_MEETINGS_LIMIT", "max_open_meetings is 2")
    assert rows(server.data_dir, "meetings", fingerprint(KEY_A)) == 2
    # Asking again for a meeting it has is not a new one.
    assert post(server, "/meetings", KEY_A, {"external_id": "e1"}).status_code == 200
    # Another key has its own count, and its own limit from the keys file.
    for n in range(3):
        assert post(server, "/meetings", KEY_B, {"external_id": f"b{n}"}).status_code == 201
    fourth = post(server, "/meetings", KEY_B, {})
    refused(fourth, 403, "ERR_OPEN_MEETINGS_LIMIT", "max_open_meetings is 3")
    # A finalized meeting no longer holds a slot; e3 is new (201), so the refusal kept nothing.
    meeting_id = first.json()["id"]
    finalize = post(server, f"/meetings/{meeting_id}/finalize", KEY_A, {"last_seq": {"mic": 0}})
    assert finalize.status_code in (200, 202), finalize.text
    assert post(server, "/meetings", KEY_A, {"external_id": "e3"}).status_code == 201


def test_webhooks_per_key(server):
    assert post(server, "/webhooks", KEY_A, HOOK).status_code == 201
    refused(post(server, "/webhooks", KEY_A, HOOK), 403, "ERR_WEBHOOKS_LIMIT", "max_webhooks is 1")
    listed = requests.get(server.url + "/webhooks", headers=auth(KEY_A), timeout=10).json()
    assert len(listed["webhooks"]) == 1
    assert rows(server.data_dir, "webhooks", fingerprint(KEY_A)) == 1
    assert post(server, "/webhooks", KEY_B, HOOK).status_code == 201
    assert post(server, "/webhooks", KEY_B, HOOK).status_code == 201
    refused(post(server, "/webhooks", KEY_B, HOOK), 403, "ERR_WEBHOOKS_LIMIT", "max_webhooks is 2")
    hook_id = listed["webhooks"][0]["id"]
    deleted = requests.delete(server.url + f"/webhooks/{hook_id}", headers=auth(KEY_A), timeout=10)
    assert deleted.status_code == 204
    assert post(server, "/webhooks", KEY_A, HOOK).status_code == 201


def bytes_refused(response: requests.Response, left: int) -> None:
    refused(response, 429, "ERR_UPLOAD_BYTES_LIMIT", "max_upload_bytes_per_day is 1000")
    assert f"{left} bytes left today" in response.json()["error"]["message"]
    retry = int(response.headers["Retry-After"])
    assert 0 < retry <= 86400 and abs(retry - (86400 - time.time() % 86400)) < 5


def test_upload_bytes_per_key_per_day(server):
    a = auth(KEY_A)
    owner = fingerprint(KEY_A)
    first = tus_create(server.url, 600, **a)
    assert first.status_code == 201
    assert tus_patch(first.headers["Location"], 0, b"x" * 600, **a).status_code == 204
    # A declared length past what is left: refused before the upload exists.
    bytes_refused(tus_create(server.url, 500, **a), left=400)
    assert rows(server.data_dir, "uploads", owner) == 1
    # Creation with a body of unknown final length: the body is checked before creation.
    body_create = requests.post(
        server.url + "/files/",
        data=b"y" * 401,
        headers={**TUS, **a, "Upload-Defer-Length": "1",
                 "Content-Type": "application/offset+octet-stream"},
        timeout=10,
    )  # fmt: skip
    bytes_refused(body_create, left=400)
    assert rows(server.data_dir, "uploads", owner) == 1
    # A deferred upload: a PATCH too long for today changes nothing, not even its length.
    deferred = tus_create(server.url, None, **a, **{"Upload-Defer-Length": "1"})
    location = deferred.headers["Location"]
    bytes_refused(tus_patch(location, 0, b"z" * 500, **a, **{"Upload-Length": "500"}), left=400)
    head = requests.head(location, headers={**TUS, **a}, timeout=10)
    assert head.headers["Upload-Offset"] == "0" and head.headers["Upload-Defer-Length"] == "1"
    declared = tus_patch(location, 0, b"", **a, **{"Upload-Length": "401"})
    bytes_refused(declared, left=400)  # a length declared by PATCH counts as at creation
    assert tus_patch(location, 0, b"z" * 400, **a).status_code == 204
    bytes_refused(tus_patch(location, 400, b"z", **a), left=0)

    def chunked() -> Iterator[bytes]:
        yield b"w" * 10  # no Content-Length: refused as the bytes come

    patch = requests.patch(
        location,
        data=chunked(),
        headers={**TUS, **a, "Upload-Offset": "400",
                 "Content-Type": "application/offset+octet-stream"},
        timeout=10,
    )  # fmt: skip
    bytes_refused(patch, left=0)
    head = requests.head(location, headers={**TUS, **a}, timeout=10)
    assert head.headers["Upload-Offset"] == "400"
    # Another key (unlimited in the keys file) is not held back.
    b = auth(KEY_B)
    big = tus_create(server.url, 5000, **b)
    assert tus_patch(big.headers["Location"], 0, b"b" * 5000, **b).status_code == 204


def test_limits_from_the_environment_apply_without_keys(tmp_path):
    env = {
        "ROLLSCRIBE_MAX_OPEN_MEETINGS_PER_KEY": "1",
        "ROLLSCRIBE_MAX_UPLOAD_BYTES_PER_KEY_PER_DAY": "10",
        "ROLLSCRIBE_MAX_WEBHOOKS_PER_KEY": "1",
        "ROLLSCRIBE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    }
    process = ServerProcess(tmp_path / "data", env=env).start()
    try:
        base = process.url
        assert requests.post(base + "/meetings", json={}, timeout=10).status_code == 201
        refused(
            requests.post(base + "/meetings", json={}, timeout=10),
            403, "ERR_OPEN_MEETINGS_LIMIT", "max_open_meetings is 1",
        )  # fmt: skip
        assert requests.post(base + "/webhooks", json=HOOK, timeout=10).status_code == 201
        refused(
            requests.post(base + "/webhooks", json=HOOK, timeout=10),
            403, "ERR_WEBHOOKS_LIMIT", "max_webhooks is 1",
        )  # fmt: skip
        refused(tus_create(base, 11), 429, "ERR_UPLOAD_BYTES_LIMIT", "is 10")
        assert tus_create(base, 10).status_code == 201
    finally:
        process.stop()


@pytest.mark.storage_free
@pytest.mark.parametrize(
    "args, env",
    [
        (["--max-webhooks-per-key", "-1"], {}),
        ([], {"ROLLSCRIBE_MAX_OPEN_MEETINGS_PER_KEY": "many"}),
        ([], {"ROLLSCRIBE_MAX_UPLOAD_BYTES_PER_KEY_PER_DAY": "²"}),
    ],
)
def test_bad_limit_values_stop_the_start(tmp_path, args, env):
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(free_port()),
         "--data-dir", str(tmp_path / "d"), "--workers", "0", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode != 0 and "expected a non-negative integer" in result.stderr
