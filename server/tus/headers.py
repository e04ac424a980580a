"""Parsing of tus request headers, strictly as the tus 1.0.0 protocol text words them."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from server.errors import ApiError, Errors

CHECKSUM_ALGORITHMS = ("sha1", "md5", "sha256", "sha512")
_INT = re.compile(r"^[0-9]{1,19}$")
_KEY = re.compile(r"^[!-+\--~]+$")  # printable ASCII without space or comma


def parse_non_negative(value: str | None, kind: object) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not _INT.match(value):
        raise ApiError(kind, f"got {value[:40]!r}")  # type: ignore[arg-type]
    return int(value)


def parse_metadata(header: str | None, max_bytes: int) -> dict[str, str | None]:
    """`key base64,key2 base64,...`; a key may stand without a value."""
    if header is None or header.strip() == "":
        return {}
    if len(header) > max_bytes:
        raise ApiError(Errors.METADATA_TOO_LARGE, f"{len(header)} bytes, at most {max_bytes}")
    result: dict[str, str | None] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0] or not _KEY.match(parts[0]):
            raise ApiError(Errors.INVALID_METADATA, f"bad pair {pair.strip()[:60]!r}")
        key = parts[0]
        if key in result:
            raise ApiError(Errors.INVALID_METADATA, f"key {key!r} appears twice")
        if len(parts) == 1 or parts[1] == "":
            result[key] = None
            continue
        try:
            raw = base64.b64decode(parts[1], validate=True)
            result[key] = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise ApiError(
                Errors.INVALID_METADATA, f"value of {key!r} is not base64 of UTF-8 text"
            ) from None
    return result


def encode_metadata(meta: dict[str, str | None]) -> str:
    pairs = []
    for key, value in meta.items():
        if value is None:
            pairs.append(key)
        else:
            pairs.append(f"{key} {base64.b64encode(value.encode()).decode()}")
    return ",".join(pairs)


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes


def parse_checksum(header: str | None) -> Checksum | None:
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise ApiError(Errors.INVALID_CHECKSUM_HEADER, "expected '<algorithm> <base64 digest>'")
    algorithm = parts[0].lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise ApiError(
            Errors.UNSUPPORTED_CHECKSUM,
            f"{parts[0]!r}; supported: {','.join(CHECKSUM_ALGORITHMS)}",
        )
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise ApiError(Errors.INVALID_CHECKSUM_HEADER, "digest is not base64") from None
    return Checksum(algorithm, digest)


@dataclass(frozen=True)
class Concat:
    kind: str  # "partial" | "final"
    parts: list[str]


def parse_concat(header: str | None) -> Concat | None:
    if header is None:
        return None
    header = header.strip()
    if header == "partial":
        return Concat("partial", [])
    if not header.startswith("final;"):
        raise ApiError(Errors.INVALID_CONCAT, "expected 'partial' or 'final;<url> <url> ...'")
    urls = [u for u in header[len("final;") :].split(" ") if u]
    if not urls:
        raise ApiError(Errors.INVALID_CONCAT, "a final upload needs at least one partial upload")
    ids = []
    for url in urls:
        path = url.split("?", 1)[0].rstrip("/")
        if "/files/" not in path:
            raise ApiError(Errors.INVALID_CONCAT, f"{url[:80]!r} is not an upload URL")
        ids.append(path.rsplit("/files/", 1)[1])
    return Concat("final", ids)
