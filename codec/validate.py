"""Validates an upload as one complete Ogg Opus stream (RFC 7845) without decoding it."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from codec.errors import InvalidOpusError
from codec.ogg_pages import OggPage, OggPageReader
from codec.opus_packets import judge_packets, packet_layout_error, packet_samples

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


# Pages are kept until this many bytes, then their packets are judged at once: a small
# chunk's pages in one go, a large upload never held whole (with the arrays of its packets'
# bounds, 8 bytes per packet, at most about 9 times this).
JUDGE_EVERY = 1 << 20


@dataclass(frozen=True)
class AudioPackets:
    """Complete audio packets: number `first + i` is `buffer[starts[i]:ends[i]]`."""

    first: int
    buffer: bytes
    starts: np.ndarray
    ends: np.ndarray


class PacketBounds:
    """Where the packets of a stream lie, from its pages' lacing values: a packet ends at
    the first segment shorter than 255 bytes, possibly pages later, so in the pages' bodies
    one after another the packets are contiguous. Pages are kept (lacing values and bodies)
    and their packets found, and judged (`codec/opus_packets.judge_packets`), in one pass
    over many: walked packet by packet in Python, the framing and the rules for each packet
    were 1.3 ms per 30 s chunk, one call per packet and rule (bench/README.md, "Many small
    uploads"). Per page, only what tells when a packet grows too large. Header packets are
    only counted, not held: OpusTags may be large and nothing here reads it."""

    def __init__(self) -> None:
        self.index = 0  # packets completed so far: 0 is OpusHead, 1 is OpusTags, then audio
        self.held = 0  # bytes of an audio packet unfinished at the end of the last page
        self.kept = 0  # bytes of the pages kept (lacing values and bodies)
        self._taken = 0  # packets completed in the pages taken before
        self._lacing: list[bytes] = []
        self._bodies: list[bytes] = []

    def add(self, page: OggPage) -> None:
        """InvalidOpusError for a packet too large or a page that cuts one short (the page
        is not kept then)."""
        if not page.continued and self.held:
            raise InvalidOpusError(
                f"page {page.sequence} starts a new packet while packet {self.index} is unfinished"
            )
        lacing = page.header[27 : 27 + page.header[26]]
        ended = len(lacing) - lacing.count(255)
        if self.held + len(page.body) > MAX_AUDIO_PACKET:
            self._check_sizes(lacing)  # only a page this large can hold a packet too large
        self.index += ended
        if self.index < 2:
            self.held = 0
        elif ended:
            self.held = 255 * (len(lacing) - len(lacing.rstrip(b"\xff")))
        else:
            self.held += len(page.body)
        self._lacing.append(lacing)
        self._bodies.append(page.body)
        # Lacing values count too: a page of empty packets has lacing values and no body.
        self.kept += len(lacing) + len(page.body)

    def _check_sizes(self, lacing: bytes) -> None:
        index, size = self.index, self.held
        for value in lacing:
            size += value
            if value == 255:
                continue
            if index >= 2 and size > MAX_AUDIO_PACKET:
                self._too_large(index - 2)
            index, size = index + 1, 0
        if index >= 2 and size > MAX_AUDIO_PACKET:
            self._too_large(index - 2)

    @staticmethod
    def _too_large(number: int) -> None:
        raise InvalidOpusError(
            f"audio packet {number} is larger than {MAX_AUDIO_PACKET} "
            "bytes, more than any Opus packet"
        )

    def take(self) -> AudioPackets:
        """The audio packets completed in the pages kept; only the bytes of an unfinished
        audio packet stay kept, for the pages that finish it."""
        buffer = b"".join(self._bodies)
        lacing = np.frombuffer(b"".join(self._lacing), dtype=np.uint8)
        ends = np.cumsum(lacing, dtype=np.int64)[lacing < 255]
        starts = np.empty_like(ends)
        if len(ends):
            starts[0] = 0  # the first packet began here, or in bytes kept from before
            starts[1:] = ends[:-1]
        headers = min(len(ends), max(0, 2 - self._taken))
        audio = AudioPackets(self._taken + headers - 2, buffer, starts[headers:], ends[headers:])
        self._taken += len(ends)
        self._lacing.clear()
        self._bodies.clear()
        self.kept = 0
        if self.held:  # all its lacing values are 255
            self._lacing.append(b"\xff" * (self.held // 255))
            self._bodies.append(buffer[len(buffer) - self.held :])
            self.kept = self.held // 255 + self.held
        return audio


# A stream is taken for ciphertext when this share of its audio packets (those longer than
# a 3-byte silence frame) carry a DAVE trailer; real Opus does so once in ~300,000 packets.
DAVE_SHARE = 0.1


# Granule positions may run ahead of the packets by the encoder's end trimming, never more.
GRANULE_SLACK_S = 0.12


@dataclass
class _Counts:
    substantive: int = 0  # audio packets longer than a silence frame
    encrypted: int = 0  # audio packets that end with a DAVE trailer
    samples: int = 0  # what the audio packets hold, by their TOC bytes


def _judge(bounds: PacketBounds, counts: _Counts) -> None:
    """The audio packets completed in the pages kept, judged at once, into `counts`;
    InvalidOpusError for the first that is not Opus, in the per-packet functions' words."""
    audio = bounds.take()
    judged = judge_packets(audio.buffer, audio.starts, audio.ends)
    if judged.first_bad is not None:
        i = judged.first_bad
        packet = audio.buffer[int(audio.starts[i]) : int(audio.ends[i])]
        problem = packet_layout_error(packet)
        if problem is not None:
            raise InvalidOpusError(
                f"audio packet {audio.first + i} is not an Opus packet ({problem}): "
                "the stream holds bytes that are not Opus audio (encrypted or corrupt)"
            )
        packet_samples(packet)  # raises: libopus cannot count its samples
        raise AssertionError(f"audio packet {audio.first + i} was judged not Opus, but is")
    counts.substantive += judged.substantive
    counts.encrypted += judged.encrypted
    counts.samples += judged.samples


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
    bounds = PacketBounds()
    counts = _Counts()
    pages_read = iter(reader)
    while True:
        # Any error in a page is raised after those of the packets before it, as walking
        # the packets page by page would.
        try:
            page = next(pages_read, None)
            if page is None:
                break
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
            bounds.add(page)
        except InvalidOpusError:
            _judge(bounds, counts)
            raise
        if bounds.kept >= JUDGE_EVERY:
            _judge(bounds, counts)
        pages += 1
        packets += page.packets
        eos = page.eos
    _judge(bounds, counts)
    if reader.trailing_bytes:
        raise InvalidOpusError(
            f"truncated: the last {reader.trailing_bytes} bytes do not form a complete page"
        )
    if head is None:
        raise InvalidOpusError("no Ogg page found")
    if not eos:
        raise InvalidOpusError("truncated: the stream does not end with an end-of-stream page")
    if counts.encrypted and counts.encrypted >= DAVE_SHARE * counts.substantive:
        raise InvalidOpusError(
            f"{counts.encrypted} of {counts.substantive} audio packets end with Discord's "
            "end-to-end encryption (DAVE) trailer: the audio is still encrypted; decrypt the "
            "frames before muxing them"
        )
    channels, pre_skip, rate = head
    duration = max(0, last_granule - pre_skip) / OPUS_RATE
    # The duration comes from the last granule position, which the sender writes: a few
    # bytes can claim a hundred hours. The packets themselves say how much audio there is.
    held = max(0, counts.samples - pre_skip) / OPUS_RATE
    if duration > held + GRANULE_SLACK_S:
        raise InvalidOpusError(
            f"the stream claims {duration:.1f} s (last granule position) but its packets "
            f"hold {held:.1f} s"
        )
    return OpusStreamInfo(channels, rate, pre_skip, duration, pages, max(0, packets - 2))
