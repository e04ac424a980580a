"""Validates an upload as one complete Ogg Opus stream (RFC 7845) without decoding it."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from codec.errors import InvalidOpusError
from codec.ogg_pages import OggPage, OggPageReader
from codec.opus_packets import (
    SILENCE_FRAME,
    has_dave_trailer,
    packet_layout_error,
    packet_samples,
)

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


# RFC 7845 §6: demuxers may treat larger audio packets as invalid (120 ms of the largest
# frames); it also bounds what a packet spread over endless pages can make us hold.
MAX_AUDIO_PACKET = 61_440


class PacketAssembler:
    """Joins the packets of a stream from its pages' lacing values (a packet ends at the
    first segment shorter than 255 bytes, possibly pages later). Header packets are only
    counted, not held: OpusTags may be large and nothing here reads it."""

    def __init__(self) -> None:
        self.index = 0  # packets completed so far: 0 is OpusHead, 1 is OpusTags, then audio
        self._partial = bytearray()

    def complete(self, page: OggPage) -> list[tuple[int, bytes]]:
        """The audio packets that end on this page, numbered from the first audio packet."""
        if not page.continued and self._partial:
            raise InvalidOpusError(
                f"page {page.sequence} starts a new packet while packet {self.index} is unfinished"
            )
        lacing = page.header[27 : 27 + page.header[26]]
        body = page.body
        done: list[tuple[int, bytes]] = []
        start = end = 0  # the packet being read: body[start:end]
        for size in lacing:
            end += size
            if size == 255:
                continue  # the packet goes on
            if self.index >= 2:
                if self._partial:  # begun on an earlier page
                    self._partial += body[start:end]
                    packet = bytes(self._partial)
                    self._partial.clear()
                else:  # the whole packet is on this page: sliced, not copied twice
                    packet = body[start:end]
                self._check_size(len(packet))
                done.append((self.index - 2, packet))
            self.index += 1
            start = end
        if self.index >= 2 and end > start:  # a packet that goes on to the next page
            self._partial += body[start:end]
            self._check_size(len(self._partial))
        return done

    def _check_size(self, size: int) -> None:
        if size > MAX_AUDIO_PACKET:
            raise InvalidOpusError(
                f"audio packet {self.index - 2} is larger than {MAX_AUDIO_PACKET} "
                "bytes, more than any Opus packet"
            )


# A stream is taken for ciphertext when this share of its audio packets (those longer than
# a 3-byte silence frame) carry a DAVE trailer; real Opus does so once in ~300,000 packets.
DAVE_SHARE = 0.1


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
    assembler = PacketAssembler()
    samples = 0  # what the audio packets hold, by their TOC bytes
    substantive = encrypted = 0
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
        for number, packet in assembler.complete(page):
            if len(packet) > len(SILENCE_FRAME):
                substantive += 1
            if has_dave_trailer(packet):
                # Judged for the whole stream below, with the reason that fits.
                encrypted += 1
                continue
            problem = packet_layout_error(packet)
            if problem is not None:
                raise InvalidOpusError(
                    f"audio packet {number} is not an Opus packet ({problem}): "
                    "the stream holds bytes that are not Opus audio (encrypted or corrupt)"
                )
            samples += packet_samples(packet)
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
    if encrypted and encrypted >= DAVE_SHARE * substantive:
        raise InvalidOpusError(
            f"{encrypted} of {substantive} audio packets end with Discord's end-to-end "
            "encryption (DAVE) trailer: the audio is still encrypted; decrypt the frames "
            "before muxing them"
        )
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
