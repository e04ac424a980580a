"""What stored fields may hold, checked one way everywhere: integers that fit the
database's columns (from headers, paths and tus metadata), track names and labels."""

from __future__ import annotations

# The largest id or seq a client may name: the database's 32-bit INTEGER columns (event
# ids, chunk seqs) on PostgreSQL. A larger value can name nothing that exists.
MAX_DB_INT = 2**31 - 1


def ascii_int(raw: str | None, maximum: int = MAX_DB_INT) -> int | None:
    """`raw` as a non-negative integer in ASCII digits, at most `maximum`; None when it is
    not one. str.isdigit() alone is not enough: it accepts "²", which int() refuses (a 500),
    and "٣", which int() reads as 3."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw or len(raw) > 19 or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if value <= maximum else None


def is_storable_text(value: str) -> bool:
    """Text both databases keep as given: no NUL (PostgreSQL's text cannot hold one, and
    refused it with a fault, while SQLite kept it) and no unpaired surrogate (JSON's
    "\\ud800" decodes to one; it has no UTF-8 form, and both databases' drivers refused
    it with a fault)."""
    if "\0" in value:
        return False
    if value.isascii():  # nearly every value: no encoding to try
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# A track's name, in a meeting's declared tracks and in a chunk's metadata alike.
MAX_TRACK_CHARS = 200

# Tracks a meeting may declare (and name in its per-track fields).
MAX_TRACKS = 64


# What a transcript shows a track as (a Discord display name is at most 32 characters).
MAX_TRACK_LABEL_CHARS = 100


def is_track_label(value: object) -> bool:
    """1 to MAX_TRACK_LABEL_CHARS printable characters, not all blank."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_TRACK_LABEL_CHARS
        and value.isprintable()
        and bool(value.strip())
    )


def is_track_name(value: object) -> bool:
    """1 to MAX_TRACK_CHARS printable characters. Printable as Python says: no control,
    format or separator characters but the space."""
    return isinstance(value, str) and 0 < len(value) <= MAX_TRACK_CHARS and value.isprintable()
