"""Validates an upload as one complete Ogg Opus stream (RFC 7845) without decoding it."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from codec.errors import InvalidOpusError
from codec.ogg_pages import OggPage, OggPageReader
from codec.opus_packets import packet_samples

OPUS_RATE = 48000


@dataclass(frozen=True)
class OpusStreamInfo:
    channels: int
    input_sample_rate: int
    pre_skip: int
    duration_s: float
    pages: int
    packets: int


def _parse_head(body: bytes) -> tuple[int, int, int]:
    if not body.startswith(b"OpusHead"):
        raise InvalidOpusError(f"missing OpusHead: first packet starts with {body[:8]!r}")
    if len(body) < 19:
        raise InvalidOpusError("OpusHead is too short")
    version, channels, pre_skip, rate, _gain, family = struct.unpack_from("<BBHIhB", body, 8)
    if version >> 4 != 0:
        raise InvalidOpusError(f"unsupported OpusHead version {version}")
    if channels < 1:
        raise InvalidOpusError("OpusHead declares no channel")
    if family not in (0, 1):
        raise InvalidOpusError(f"unsupported channel mapping family {family}")
    return channels, pre_skip, rate


def packets_starting(page: OggPage) -> list[bytes]:
    """The packets that start on this page, as far as they lie on it (from the lacing
    values: a packet ends at the first segment shorter than 255 bytes)."""
    lacing = page.header[27 : 27 + page.header[26]]
    packets: list[bytes] = []
    position = 0
    start: int | None = None if page.continued else 0
    for size in lacing:
        if start is None:  # still inside a packet begun on an earlier page
            if size < 255:
                start = position + size
            position += size
            continue
        position += size
        if size < 255:
            packets.append(page.body[start:position])
            start = position
    if start is not None and start < position:
        packets.append(page.body[start:position])  # continues on the next page
    return packets


# Granule positions may run ahead of the packets by the encoder's end trimming, never more.
GRANULE_SLACK_S = 0.12


def validate_ogg_opus(path: str | os.PathLike[str]) -> OpusStreamInfo:
    if os.path.getsize(path) == 0:
        raise InvalidOpusError("empty file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"OggS":
        raise InvalidOpusError(f"not an Ogg stream: first bytes are {magic!r}")
    reader = OggPageReader(path)
    pages = packets = 0
    serial = None
    head: tuple[int, int, int] | None = None
    last_granule = -1
    eos = False
    index = 0  # packets started so far: 0 is OpusHead, 1 is OpusTags, then audio
    samples = 0  # what the audio packets hold, by their TOC bytes
    for page in reader:
        if eos:
            raise InvalidOpusError("data after the end-of-stream page (chained streams)")
        if serial is None:
            if not page.bos:
                raise InvalidOpusError("first page is not a beginning-of-stream page")
            serial = page.serial
            head = _parse_head(page.body)
        elif page.serial != serial or page.bos:
            raise InvalidOpusError("more than one logical stream (multiplexed or chained)")
        elif pages == 1 and not page.body.startswith(b"OpusTags"):
            raise InvalidOpusError("second packet is not OpusTags")
        if page.granule != -1:
            if page.granule < last_granule:
                raise InvalidOpusError(f"granule position goes backwards on page {pages}")
            last_granule = page.granule
        for packet in packets_starting(page):
            if index >= 2:
                samples += packet_samples(packet)
            index += 1
        pages += 1
        packets += page.packets
        eos = page.eos
    if reader.trailing_bytes:
        raise InvalidOpusError(
            f"truncated: the last {reader.trailing_bytes} bytes do not form a complete page"
        )
    if head is None:
        raise InvalidOpusError("no Ogg page found")
    if not eos:
        raise InvalidOpusError("truncated: the stream does not end with an end-of-stream page")
    channels, pre_skip, rate = head
    duration = max(0, last_granule - pre_skip) / OPUS_RATE
    # The duration comes from the last granule position, which the sender writes: a few
    # bytes can claim a hundred hours. The packets themselves say how much audio there is.
    held = max(0, samples - pre_skip) / OPUS_RATE
    if duration > held + GRANULE_SLACK_S:
        raise InvalidOpusError(
            f"the stream claims {duration:.1f} s (last granule position) but its packets "
            f"hold {held:.1f} s"
        )
    return OpusStreamInfo(channels, rate, pre_skip, duration, pages, max(0, packets - 2))
