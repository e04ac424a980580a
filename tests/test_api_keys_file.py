"""The keys file format, line by line (the server and `rollscribe keys` both read it so)."""

from __future__ import annotations

import hashlib

import pytest

from server.api_keys_file import KeysFileError, parse_env_keys, parse_keys
from server.auth import api_keys_from, fingerprint
from server.key_limit_values import KeyLimits

pytestmark = pytest.mark.storage_free

TOKEN = "dG9rZW4tdG9rZW4tdG9rZW4="  # base64, "=" and all


def test_plain_hashed_and_commented_lines():
    digest = hashlib.sha256(b"another-token-0123456789").hexdigest()
    entries = parse_keys(
        f"# keys\n\n{TOKEN}  # the old one\n"
        f"SHA256:{digest.upper()} name=ci created=2026-11-23T22:40:00Z max_webhooks=0\n"
    )
    assert [e.line for e in entries] == [3, 4]
    assert entries[0].digest == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert entries[0].owner == fingerprint(TOKEN)  # rows keep their owner id
    assert entries[1].digest == digest and entries[1].name == "ci"
    assert entries[1].created == "2026-11-23T22:40:00Z" and entries[1].limits == {"max_webhooks": 0}
    keys = api_keys_from(entries, KeyLimits(max_webhooks=7, max_open_meetings=3))
    assert keys.find(TOKEN).limits == KeyLimits(max_webhooks=7, max_open_meetings=3)
    assert keys.find("another-token-0123456789").limits.max_webhooks == 0  # 0: unlimited
    assert keys.find("another-token-012345678") is None


@pytest.mark.parametrize(
    "line, problem",
    [
        ("sha256:abc name=x", "64 hex digits"),
        ("short", "at least 16 characters"),
        ("name=ci", "starts with a key, not name="),
        (f"{TOKEN} colour=red", "expected field=value"),
        (f"{TOKEN} name", "expected field=value"),
        (f"{TOKEN} name=a name=b", "name is given twice"),
        (f"{TOKEN} name=has/slash", "name must be"),
        (f"{TOKEN} max_open_meetings=-1", "max_open_meetings must be a non-negative integer"),
        (f"{TOKEN} max_upload_bytes_per_day=²", "must be a non-negative integer"),
    ],
)
def test_malformed_lines_name_their_line(line, problem):
    with pytest.raises(KeysFileError, match="line 2: .*" + problem.replace("(", r"\(")):
        parse_keys("# first\n" + line + "\n")


def test_duplicates_are_malformed():
    with pytest.raises(KeysFileError, match="line 2: name 'a' is taken by line 1"):
        parse_keys("token-one-0123456789 name=a\ntoken-two-0123456789 name=a\n")
    with pytest.raises(KeysFileError, match="line 2: the same key as line 1"):
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        parse_keys(f"{TOKEN}\nsha256:{digest}\n")


def test_environment_keys_are_plain_tokens():
    assert [e.digest for e in parse_env_keys(f" {TOKEN} ,,")] == [
        hashlib.sha256(TOKEN.encode()).hexdigest()
    ]
    with pytest.raises(KeysFileError, match="ROLLSCRIBE_API_KEYS: .*16 characters"):
        parse_env_keys("short")
