"""The API keys file: one key a line, as its SHA-256 (written by `rollscribe keys add`) or,
as before, the token itself.

    # comments run to the end of a line
    sha256:<64 hex> name=ci created=2026-11-23T22:40:00Z max_open_meetings=5
    a-plain-token-of-at-least-16-characters name=legacy

After the key come optional `field=value` pairs: `name` (letters, digits, `.`, `_`, `-`;
unique in the file), `created` (when it was added, UTC) and any per-key limit
(`max_open_meetings`, `max_upload_bytes_per_day`, `max_webhooks`; 0 = unlimited), which
overrides the server's default for that key. A key's owner id (stored on its meetings) is
the first 32 hex digits of its SHA-256, whichever way the line spells it: hashing a plain
line keeps its meetings.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from server.key_limit_values import LIMIT_NAMES

HASH_PREFIX = "sha256:"
MIN_TOKEN_LENGTH = 16
TOKEN_PREFIX = "rsk_"
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
HEX64 = re.compile(r"[0-9a-f]{64}")
FIELDS = frozenset({"name", "created", *LIMIT_NAMES})


class KeysFileError(ValueError):
    """The file (or the environment's list) is malformed; the message names the line."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    # 256 random bits; the prefix lets secret scanners and people recognise one.
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class KeyEntry:
    digest: str  # SHA-256 of the token, 64 hex digits
    name: str | None = None
    created: str | None = None
    limits: dict[str, int] = field(default_factory=dict)  # overrides of the server defaults
    line: int = 0  # 1-based line in the file; 0 for a key from the environment

    @property
    def owner(self) -> str:
        """What rows store as their owner; unchanged from when keys were plain tokens."""
        return self.digest[:32]


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _plain_token_digest(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        raise KeysFileError(
            f"{where}: API keys must be at least {MIN_TOKEN_LENGTH} characters long"
        )
    return token_digest(token)


def parse_line(text: str, line: int) -> KeyEntry | None:
    """One line of the file; None for a blank or comment line."""
    words = _strip_comment(text).split()
    if not words:
        return None
    where = f"line {line}"
    first, pairs = words[0], words[1:]
    if first.lower().startswith(HASH_PREFIX):
        digest = first[len(HASH_PREFIX) :].lower()
        if not HEX64.fullmatch(digest):
            raise KeysFileError(f"{where}: {HASH_PREFIX} must be followed by 64 hex digits")
    elif first.partition("=")[0] in FIELDS:  # a token may hold "=" (base64), not start so
        raise KeysFileError(f"{where}: a line starts with a key, not {first.partition('=')[0]}=")
    else:
        digest = _plain_token_digest(first, where)
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in FIELDS or not value:
            raise KeysFileError(
                f"{where}: expected field=value with a field of {sorted(FIELDS)}, got {pair!r}"
            )
        if name in values:
            raise KeysFileError(f"{where}: {name} is given twice")
        values[name] = value
    limits: dict[str, int] = {}
    for name in LIMIT_NAMES:
        if name in values:
            if not values[name].isascii() or not values[name].isdigit():
                raise KeysFileError(f"{where}: {name} must be a non-negative integer")
            limits[name] = int(values[name])
    key_name = values.get("name")
    if key_name is not None and not NAME.fullmatch(key_name):
        raise KeysFileError(f"{where}: name must be 1-64 of A-Z a-z 0-9 . _ -")
    return KeyEntry(digest, key_name, values.get("created"), limits, line)


def parse_keys(text: str) -> list[KeyEntry]:
    entries = [e for n, raw in enumerate(text.splitlines(), 1) if (e := parse_line(raw, n))]
    seen_names: dict[str, int] = {}
    seen_digests: dict[str, int] = {}
    for entry in entries:
        if entry.name is not None:
            if entry.name in seen_names:
                raise KeysFileError(
                    f"line {entry.line}: name {entry.name!r} is taken by line "
                    f"{seen_names[entry.name]}"
                )
            seen_names[entry.name] = entry.line
        if entry.digest in seen_digests:
            raise KeysFileError(
                f"line {entry.line}: the same key as line {seen_digests[entry.digest]}"
            )
        seen_digests[entry.digest] = entry.line
    return entries


def parse_env_keys(value: str | None) -> list[KeyEntry]:
    """ROLLSCRIBE_API_KEYS: comma-separated plain tokens."""
    tokens = [t.strip() for t in (value or "").split(",") if t.strip()]
    return [KeyEntry(_plain_token_digest(t, "ROLLSCRIBE_API_KEYS")) for t in tokens]


def read_keys_file(path: Path) -> tuple[str, list[KeyEntry]]:
    """The file's text and its keys; a missing file is an empty one (the first `add`)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    return text, parse_keys(text)


def format_entry(digest: str, name: str, created: str, limits: dict[str, int]) -> str:
    pairs = [f"name={name}", f"created={created}"]
    pairs += [f"{k}={limits[k]}" for k in LIMIT_NAMES if k in limits]
    return f"{HASH_PREFIX}{digest} " + " ".join(pairs)


def without_line(text: str, line: int) -> str:
    lines = text.splitlines(keepends=True)
    del lines[line - 1]
    return "".join(lines)


def with_line(text: str, line: str) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + line + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Readers (a polling server) see the old file or the new one, never half of one; the
    file is the operator's only (0600) even though it holds no token."""
    directory = path.resolve().parent
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
