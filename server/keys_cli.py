"""`rollscribe keys add | list | revoke`: manage the API keys file.

`add` prints a new token once and writes only its SHA-256; nothing can show it again. A
running server picks every change up within about a second (`server.key_ring`).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.api_keys_file import (
    HASH_PREFIX,
    KeyEntry,
    KeysFileError,
    format_entry,
    new_token,
    now_iso,
    parse_keys,
    read_keys_file,
    token_digest,
    with_line,
    without_line,
    write_atomically,
)

SHOWN_FINGERPRINT = 12  # hex digits `list` shows, and enough to name a key to `revoke`
MIN_PREFIX = 6


class KeysCommandError(Exception):
    pass


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    # On each subcommand (`rollscribe keys add --file F`), as operators type it.
    file = argparse.ArgumentParser(add_help=False)
    file.add_argument(
        "--file",
        "--api-keys-file",
        dest="keys_file",
        default=os.environ.get("ROLLSCRIBE_API_KEYS_FILE"),
        help="the keys file (default: ROLLSCRIBE_API_KEYS_FILE)",
    )
    sub = parser.add_subparsers(dest="keys_command", required=True)
    add = sub.add_parser(
        "add", parents=[file], help="make a key: prints its token once, stores its hash"
    )
    add.add_argument("--name", help="a label to list and revoke it by (default: key-<hex>)")
    add.add_argument("--max-open-meetings", type=int, help="this key's limit (0: unlimited)")
    add.add_argument("--max-upload-bytes-per-day", type=int, help="this key's limit, UTC day")
    add.add_argument("--max-webhooks", type=int, help="this key's limit (0: unlimited)")
    sub.add_parser(
        "list", parents=[file], help="name, fingerprint, created time and limits of each key"
    )
    revoke = sub.add_parser(
        "revoke", parents=[file], help="remove a key: the server refuses it within ~1 s"
    )
    revoke.add_argument("key", metavar="NAME|FINGERPRINT_PREFIX")


@contextmanager
def _locked_folder(path: Path) -> Iterator[None]:
    """Two `keys` commands at once must not both rewrite the file from the same old text."""
    fd = os.open(path.resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> tuple[str, list[KeyEntry]]:
    try:
        return read_keys_file(path)
    except KeysFileError as exc:
        raise KeysCommandError(f"{path} is malformed, fix it first: {exc}") from None


def add_key(path: Path, name: str | None, limits: dict[str, int]) -> tuple[str, KeyEntry]:
    for limit, value in limits.items():
        if value < 0:
            raise KeysCommandError(f"{limit} must be 0 (unlimited) or more")
    with _locked_folder(path):
        text, entries = _read(path)
        if not text:
            text = "# rollscribe API keys (rollscribe keys add/list/revoke): hashes, no tokens\n"
        token = new_token()
        digest = token_digest(token)
        name = name or f"key-{digest[:8]}"
        if any(e.name == name for e in entries):
            raise KeysCommandError(f"a key named {name!r} exists already")
        line = format_entry(digest, name, now_iso(), limits)
        new_text = with_line(text, line)
        try:  # read back as the server will, before anything is written
            entry = parse_keys(new_text)[-1]
        except KeysFileError as exc:
            raise KeysCommandError(f"the new line would not parse ({exc})") from None
        write_atomically(path, new_text)
    return token, entry


def find_key(entries: list[KeyEntry], wanted: str) -> KeyEntry:
    by_name = [e for e in entries if e.name == wanted]
    if by_name:
        return by_name[0]  # names are unique in a file that parses
    prefix = wanted.lower().removeprefix(HASH_PREFIX)
    if len(prefix) < MIN_PREFIX or not all(c in "0123456789abcdef" for c in prefix):
        raise KeysCommandError(
            f"no key is named {wanted!r} (a fingerprint prefix needs {MIN_PREFIX}+ hex digits)"
        )
    matches = [e for e in entries if e.digest.startswith(prefix)]
    if not matches:
        raise KeysCommandError(f"no key is named {wanted!r} or has a fingerprint starting so")
    if len(matches) > 1:
        shown = ", ".join(e.name or e.digest[:SHOWN_FINGERPRINT] for e in matches)
        raise KeysCommandError(f"{wanted!r} matches {len(matches)} keys ({shown}): say more")
    return matches[0]


def revoke_key(path: Path, wanted: str) -> KeyEntry:
    with _locked_folder(path):
        if not path.exists():
            raise KeysCommandError(f"{path} does not exist")
        text, entries = _read(path)
        entry = find_key(entries, wanted)
        write_atomically(path, without_line(text, entry.line))
    return entry


def list_keys(path: Path) -> list[str]:
    _, entries = _read(path)
    rows = [("NAME", "FINGERPRINT", "CREATED", "LIMITS")]
    for e in entries:
        limits = " ".join(f"{k}={v}" for k, v in e.limits.items()) or "server defaults"
        rows.append((e.name or "-", e.digest[:SHOWN_FINGERPRINT], e.created or "-", limits))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]


def run_from_args(args: argparse.Namespace) -> None:
    if not args.keys_file:
        sys.exit("rollscribe keys: name the keys file: --file or ROLLSCRIBE_API_KEYS_FILE")
    path = Path(args.keys_file)
    try:
        if args.keys_command == "add":
            limits = {
                name: value
                for name, value in (
                    ("max_open_meetings", args.max_open_meetings),
                    ("max_upload_bytes_per_day", args.max_upload_bytes_per_day),
                    ("max_webhooks", args.max_webhooks),
                )
                if value is not None
            }
            token, entry = add_key(path, args.name, limits)
            print(token, flush=True)
            print(
                f"added key {entry.name} (fingerprint {entry.digest[:SHOWN_FINGERPRINT]}) to "
                f"{path}; the token above is not stored and will not be shown again",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            for row in list_keys(path):
                print(row)
        else:
            entry = revoke_key(path, args.key)
            print(
                f"revoked key {entry.name or '-'} (fingerprint "
                f"{entry.digest[:SHOWN_FINGERPRINT]}) from {path}"
            )
    except (KeysCommandError, OSError) as exc:
        sys.exit(f"rollscribe keys: {exc}")
