"""The keys file: `rollscribe keys add|list|revoke`, hashed lines, and changes picked up by a
running server (added keys work, revoked ones are refused and their event streams end)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time

import pytest
import requests

from server.auth import fingerprint
from tests.key_helpers import add_key, auth, eventually, keys_command
from tests.server_process import ROOT, ServerProcess, free_port

PLAIN = "plain-token-0123456789abcdef"


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def status(server: ServerProcess, token: str) -> int:
    return requests.post(
        server.url + "/meetings", json={}, headers=auth(token), timeout=10
    ).status_code


@pytest.mark.storage_free
def test_keys_add_list_revoke(tmp_path):
    keys = tmp_path / "keys"
    added = keys_command(keys, "add", "--name", "alice", "--max-webhooks", "2")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert added.stdout.count("\n") == 1 and token.startswith("rsk_") and len(token) >= 40
    assert "alice" in added.stderr and token not in added.stderr
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    content = keys.read_text()
    assert token not in content
    assert f"sha256:{sha256(token)} name=alice created=" in content
    assert "max_webhooks=2" in content
    other = add_key(keys)  # default name
    assert other != token and other not in keys.read_text()

    listed = keys_command(keys, "list")
    assert listed.returncode == 0
    assert token not in listed.stdout and other not in listed.stdout
    alice = next(line for line in listed.stdout.splitlines() if line.startswith("alice "))
    assert sha256(token)[:12] in alice and "max_webhooks=2" in alice
    assert time.strftime("%Y-%m-%dT", time.gmtime()) in alice
    assert f"key-{sha256(other)[:8]}" in listed.stdout

    taken = keys_command(keys, "add", "--name", "alice")
    assert taken.returncode != 0 and "exists already" in taken.stderr
    unknown = keys_command(keys, "revoke", "bob")
    assert unknown.returncode != 0 and "no key is named 'bob'" in unknown.stderr
    assert keys_command(keys, "revoke", "alice").returncode == 0
    assert sha256(token) not in keys.read_text() and sha256(other) in keys.read_text()
    by_prefix = keys_command(keys, "revoke", sha256(other)[:8])
    assert by_prefix.returncode == 0, by_prefix.stderr
    assert sha256(other) not in keys.read_text()
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600


@pytest.mark.storage_free
def test_revoke_by_an_ambiguous_prefix_is_refused(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(
        f"sha256:abcdef01{'0' * 56} name=one\nsha256:abcdef02{'0' * 56} name=two\n{PLAIN}\n"
    )
    result = keys_command(keys, "revoke", "abcdef0")
    assert result.returncode != 0 and "matches 2 keys (one, two)" in result.stderr
    assert keys.read_text().count("sha256:") == 2
    assert keys_command(keys, "revoke", "abcdef02").returncode == 0
    assert keys_command(keys, "revoke", sha256(PLAIN)[:10]).returncode == 0  # a plain line
    assert keys.read_text().splitlines()[-1].startswith("sha256:abcdef01")


@pytest.mark.storage_free
def test_keys_file_from_the_environment_and_bad_files(tmp_path):
    keys = tmp_path / "keys"
    env = {**os.environ, "ROLLSCRIBE_API_KEYS_FILE": str(keys)}
    command = [sys.executable, "-m", "server.cli", "keys"]
    added = subprocess.run(
        [*command, "add"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert added.returncode == 0 and sha256(added.stdout.strip()) in keys.read_text()
    keys.write_text("sha256:nothex name=x\n")
    broken = keys_command(keys, "add")
    assert broken.returncode != 0 and "malformed" in broken.stderr and "line 1" in broken.stderr
    assert keys.read_text() == "sha256:nothex name=x\n"
    nameless = subprocess.run(
        [*command, "list"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "ROLLSCRIBE_API_KEYS_FILE"},
    )  # fmt: skip
    assert nameless.returncode != 0 and "name the keys file" in nameless.stderr


@pytest.fixture
def keys_server(tmp_path):
    """A server reading a keys file that starts with one plain-token line."""
    keys = tmp_path / "keys"
    keys.write_text(f"{PLAIN} name=legacy\n")
    server = ServerProcess(tmp_path / "data", extra=["--api-keys-file", str(keys)]).start()
    yield server, keys
    server.stop()


def test_hashed_line_authenticates_and_keeps_the_owner(keys_server):
    server, keys = keys_server
    meeting = requests.post(server.url + "/meetings", json={}, headers=auth(PLAIN), timeout=10)
    assert meeting.status_code == 201
    other = add_key(keys)
    eventually(lambda: status(server, other) == 201, timeout_s=3.0)
    keys.write_text(f"sha256:{sha256(PLAIN)} name=legacy\n")  # the token, hashed
    # The other key is gone once the new file is in force.
    eventually(lambda: status(server, other) == 401, timeout_s=3.0)
    shown = requests.get(
        server.url + f"/meetings/{meeting.json()['id']}", headers=auth(PLAIN), timeout=10
    )
    assert shown.status_code == 200  # same owner id: the meeting is still this key's
    assert fingerprint(PLAIN) == sha256(PLAIN)[:32]


def test_file_changes_apply_without_restart(keys_server):
    server, keys = keys_server
    token = add_key(keys, "--name", "new")
    assert eventually(lambda: status(server, token) == 201, timeout_s=3.0) < 2.5
    meeting = requests.post(server.url + "/meetings", json={}, headers=auth(token), timeout=10)
    events = requests.get(
        server.url + f"/meetings/{meeting.json()['id']}/events",
        headers=auth(token),
        stream=True,
        timeout=10,  # keepalives come every 25 s: a stream left open fails the read
    )
    assert events.status_code == 200
    assert keys_command(keys, "revoke", "new").returncode == 0
    revoked_at = time.monotonic()
    assert eventually(lambda: status(server, token) == 401, timeout_s=3.0) < 2.5
    body = events.raw.read()  # returns at the end of the stream
    assert time.monotonic() - revoked_at < 3.0
    assert b"error" not in body
    assert status(server, PLAIN) == 201  # the other key is untouched
    # Emptied of keys, the file refuses everyone; the server never turns keys off.
    keys.write_text("# nobody\n")
    assert eventually(lambda: status(server, PLAIN) == 401, timeout_s=3.0) < 2.5
    r = requests.post(server.url + "/meetings", json={}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "ERR_UNAUTHORIZED"


def test_malformed_file_keeps_the_last_good_keys(keys_server):
    server, keys = keys_server
    keys.write_text(f"{PLAIN} name=legacy\nsha256:1234 name=broken\n")
    time.sleep(2.5)
    assert status(server, PLAIN) == 201
    log = (server.data_dir.parent / f"server-{server.port}.log").read_text()
    problems = [line for line in log.splitlines() if "cannot be used" in line]
    assert len(problems) == 1, problems  # one line for one change, not one per poll
    assert "line 2" in problems[0] and "keeping the 1 keys" in problems[0]
    keys.unlink()  # a missing file is not "no keys": it is kept as before too
    time.sleep(2.5)
    assert status(server, PLAIN) == 201
    token = add_key(keys)  # a good file again is taken at once; the legacy key is gone
    eventually(lambda: status(server, token) == 201, timeout_s=3.0)
    assert status(server, PLAIN) == 401


@pytest.mark.storage_free
def test_a_malformed_file_stops_the_start(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{PLAIN} max_webhooks=many\n")
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--port", str(free_port()),
         "--data-dir", str(tmp_path / "d"), "--workers", "0", "--api-keys-file", str(keys)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "line 1: max_webhooks must be a non-negative integer" in result.stderr


def test_a_server_started_without_keys_stays_without(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# no keys yet\n")
    server = ServerProcess(tmp_path / "data", extra=["--api-keys-file", str(keys)]).start()
    try:
        add_key(keys)
        time.sleep(2.5)
        # Turning keys on would hide every meeting made so far (they belong to no key).
        assert requests.post(server.url + "/meetings", json={}, timeout=10).status_code == 201
        log = (server.data_dir.parent / f"server-{server.port}.log").read_text()
        assert "restart it to turn API keys on" in log
    finally:
        server.stop()
