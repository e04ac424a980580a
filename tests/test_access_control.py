"""API keys own their meetings and uploads; without keys the server stays on loopback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from tests.conftest import TUS, metadata
from tests.server_process import ROOT, ServerProcess, free_port

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# team A\n{KEY_A}\n")
    server = ServerProcess(
        tmp_path_factory.mktemp("keyed") / "data",
        extra=["--api-keys-file", str(keys)],
        env={"ROLLSCRIBE_API_KEYS": KEY_B},
    ).start()
    yield server
    server.stop()


def test_requests_without_a_valid_key_are_401(keyed_server):
    base = keyed_server.url
    for headers in ({}, auth("wrong-key-0123456789"), {"Authorization": f"Basic {KEY_A}"}):
        r = requests.post(base + "/meetings", json={}, headers=headers, timeout=10)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "ERR_UNAUTHORIZED"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        requests.post(
            base + "/files/", headers={**TUS, "Upload-Length": "1"}, timeout=10
        ).status_code
        == 401
    )
    assert requests.get(base + "/healthz", timeout=10).status_code == 200
    assert requests.options(base + "/files/", timeout=10).status_code == 200


def test_another_key_sees_nothing(keyed_server):
    base = keyed_server.url
    r = requests.post(
        base + "/meetings",
        json={"tracks": ["mic"], "external_id": "x"},
        headers=auth(KEY_A),
        timeout=10,
    )
    assert r.status_code == 201
    meeting_id = r.json()["id"]
    meta = metadata(meeting_id=meeting_id, track="mic", seq=0, start_ms=0)
    create = requests.post(
        base + "/files/",
        headers={**TUS, **auth(KEY_A), "Upload-Length": "4", "Upload-Metadata": meta},
        timeout=10,
    )
    assert create.status_code == 201
    upload = create.headers["Location"]
    assert len(upload.rsplit("/", 1)[1]) >= 22  # 128 random bits
    for method, path in [
        ("GET", f"/meetings/{meeting_id}"),
        ("GET", f"/meetings/{meeting_id}/transcript"),
        ("GET", f"/meetings/{meeting_id}/events"),
        ("POST", f"/meetings/{meeting_id}/finalize"),
        ("DELETE", f"/meetings/{meeting_id}"),
    ]:
        r = requests.request(
            method, base + path, json={"last_seq": {"mic": 0}}, headers=auth(KEY_B), timeout=10
        )
        assert r.status_code == 404, path
    for method in ("HEAD", "GET", "DELETE"):
        assert (
            requests.request(method, upload, headers={**TUS, **auth(KEY_B)}, timeout=10).status_code
            == 404
        )
    patch = requests.patch(
        upload,
        data=b"abcd",
        headers={
            **TUS,
            **auth(KEY_B),
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=10,
    )
    assert patch.status_code == 404
    # Key B cannot add chunks to A's meeting either; its own external_id space is separate.
    r = requests.post(
        base + "/files/",
        headers={**TUS, **auth(KEY_B), "Upload-Length": "4", "Upload-Metadata": meta},
        timeout=10,
    )
    assert r.status_code == 404
    r = requests.post(
        base + "/meetings", json={"external_id": "x"}, headers=auth(KEY_B), timeout=10
    )
    assert r.status_code == 201 and r.json()["id"] != meeting_id
    # Each key's list holds its own meetings only.
    listed_b = requests.get(base + "/meetings", headers=auth(KEY_B), timeout=10).json()
    assert meeting_id not in {m["id"] for m in listed_b["meetings"]}
    listed_a = requests.get(base + "/meetings", headers=auth(KEY_A), timeout=10).json()
    assert meeting_id in {m["id"] for m in listed_a["meetings"]}
    # Key A still sees everything intact.
    head = requests.head(upload, headers={**TUS, **auth(KEY_A)}, timeout=10)
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "0"


@pytest.mark.storage_free
def test_no_keys_refuses_a_public_bind(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "d"),
            "--workers",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "without API keys" in result.stderr


@pytest.mark.storage_free
def test_short_keys_are_refused(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "d"),
            "--workers",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "ROLLSCRIBE_API_KEYS": "short"},
    )
    assert result.returncode != 0 and "at least 16 characters" in result.stderr


def test_metrics_name_only_the_callers_own_meetings(keyed_server):
    base = keyed_server.url
    r = requests.post(base + "/meetings", json={"title": "a"}, headers=auth(KEY_A), timeout=10)
    meeting_a = r.json()["id"]
    r = requests.post(base + "/meetings", json={"title": "b"}, headers=auth(KEY_B), timeout=10)
    meeting_b = r.json()["id"]
    anonymous = requests.get(base + "/metrics", timeout=10).text
    as_a = requests.get(base + "/metrics", headers=auth(KEY_A), timeout=10).text
    as_b = requests.get(base + "/metrics", headers=auth(KEY_B), timeout=10).text
    assert "rollscribe_queue_jobs" in anonymous  # the totals are everyone's
    assert meeting_a not in anonymous and meeting_b not in anonymous
    assert meeting_a in as_a and meeting_b not in as_a
    assert meeting_b in as_b and meeting_a not in as_b
