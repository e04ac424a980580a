"""The validator's own answers where it does not ask libopus for each packet: the layout of
code 0 and 1 packets, sample counts kept per first two bytes, and packets taken from the
Ogg pages without copying. Each is held to libopus, or to the packets that were muxed."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.errors import InvalidOpusError
from codec.ogg_mux import OggOpusMuxer
from codec.ogg_pages import OggPageReader
from codec.opus_packets import (
    MAX_FRAME_BYTES,
    SILENCE_FRAME,
    PacketsJudged,
    _libopus_layout_error,
    _libopus_samples,
    has_dave_trailer,
    judge_packets,
    packet_layout_error,
    packet_samples,
)
from codec.validate import PacketBounds

# Lengths at the edges of the rules: one frame of up to 1,275 bytes, two equal frames.
EDGES = sorted(
    {n + d for n in (1, 2, 3, MAX_FRAME_BYTES, 2 * MAX_FRAME_BYTES) for d in (-1, 0, 1, 2)}
)


def packets() -> st.SearchStrategy[bytes]:
    edge = st.builds(
        lambda toc, length, fill: bytes([toc]) + bytes([fill]) * (length - 1),
        st.integers(0, 255),
        st.sampled_from([n for n in EDGES if n >= 1]),
        st.integers(0, 255),
    )
    return st.one_of(st.binary(min_size=1, max_size=3000), edge)


def libopus_samples(packet: bytes) -> int | None:
    samples = _libopus_samples(packet)
    return None if samples < 0 else samples


def ours_samples(packet: bytes) -> int | None:
    try:
        return packet_samples(packet)
    except InvalidOpusError:
        return None


@settings(max_examples=3000, deadline=None)
@given(packets())
def test_layout_and_samples_are_libopus_answers(packet: bytes) -> None:
    assert packet_layout_error(packet) == _libopus_layout_error(packet)
    assert ours_samples(packet) == libopus_samples(packet)


def test_every_toc_at_every_edge_length() -> None:
    """Exhaustive where it is cheap: every TOC byte and frame count at each edge length."""
    for toc in range(256):
        for length in EDGES:
            if length < 1:
                continue
            for second in (0, 1, 0x3F, 0x7F, 0xFF):
                packet = (
                    bytes([toc, second]) + b"\x55" * (length - 2) if length >= 2 else bytes([toc])
                )
                assert packet_layout_error(packet) == _libopus_layout_error(packet), (toc, length)
                assert ours_samples(packet) == libopus_samples(packet), (toc, length, second)


def test_empty_packets_are_lost_frames() -> None:
    assert packet_layout_error(b"") is None
    assert packet_samples(b"") == 0


def reassembled(stream: bytes, tmp_path, judge_every: int | None = None) -> list[bytes]:
    """The audio packets of a stream as the validator finds them; with `judge_every`, taken
    whenever that many bytes of pages are kept, as the validator takes them."""
    path = tmp_path / "s.opus"
    path.write_bytes(stream)
    bounds = PacketBounds()
    out: list[bytes] = []
    numbers: list[int] = []
    for page in OggPageReader(path):
        bounds.add(page)
        if judge_every is not None and bounds.kept >= judge_every:
            audio = bounds.take()
            numbers += range(audio.first, audio.first + len(audio.starts))
            out += [audio.buffer[s:e] for s, e in zip(audio.starts, audio.ends, strict=True)]
    audio = bounds.take()
    numbers += range(audio.first, audio.first + len(audio.starts))
    out += [audio.buffer[s:e] for s, e in zip(audio.starts, audio.ends, strict=True)]
    assert numbers == list(range(len(out)))
    return out


# libogg cuts a page inside a packet only when the page's 255 lacing values run out: packets
# of thousands of bytes (each 255 bytes is a lacing value) make that happen every few. Drawn
# as a size and a seed: hypothesis's own byte strings stay far smaller than that.
PACKET = st.builds(
    lambda size, seed: random.Random(seed).randbytes(size),
    st.one_of(st.integers(0, 300), st.integers(16_000, 30_000)),
    st.integers(0, 2**32),
)
MUXED = st.lists(PACKET, min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(MUXED, st.sampled_from([None, 1, 4000, 70_000]))
def test_packets_come_back_as_they_were_muxed(
    tmp_path_factory, written: list[bytes], judge_every: int | None
) -> None:
    """Packets of any size, many to a page or spread over several, come out of the pages
    exactly as they went in, and in the same numbers when taken every few pages (a packet
    unfinished at a take is finished by the next)."""
    mux = OggOpusMuxer(serial=5)
    stream = bytearray()
    for i, packet in enumerate(written, start=1):
        stream += mux.write_packet(packet, mux.pre_skip + i * 960)
    stream += mux.close()
    assert reassembled(bytes(stream), tmp_path_factory.mktemp("mux"), judge_every) == written


def test_the_muxed_streams_do_spread_packets_over_pages(tmp_path) -> None:
    """The test above reads continued pages (it would not catch a packet left over from
    one page to the next if none were)."""
    mux = OggOpusMuxer(serial=5)
    stream = bytearray()
    for i in range(10):
        stream += mux.write_packet(b"\xfc" * 20_000, mux.pre_skip + (i + 1) * 960)
    stream += mux.close()
    path = tmp_path / "s.opus"
    path.write_bytes(bytes(stream))
    assert sum(page.continued for page in OggPageReader(path)) >= 3
    assert reassembled(bytes(stream), tmp_path) == [b"\xfc" * 20_000] * 10


def dave_like() -> st.SearchStrategy[bytes]:
    """Packets that end with a DAVE trailer, or almost (the size byte out of range)."""
    return st.builds(
        lambda body, size: body + bytes([size]) + b"\xfa\xfa",
        st.binary(min_size=0, max_size=40),
        st.integers(0, 60),
    )


def judged_one_by_one(packets: list[bytes]) -> PacketsJudged:
    """What validation answered with a loop over the packets."""
    substantive = encrypted = samples = 0
    for i, packet in enumerate(packets):
        if packet_layout_error(packet) is not None and not has_dave_trailer(packet):
            return PacketsJudged(substantive, encrypted, samples, i)
        if not has_dave_trailer(packet) and ours_samples(packet) is None:
            return PacketsJudged(substantive, encrypted, samples, i)
        substantive += len(packet) > len(SILENCE_FRAME)
        if has_dave_trailer(packet):
            encrypted += 1
        else:
            samples += packet_samples(packet)
    return PacketsJudged(substantive, encrypted, samples, None)


def valid_packets() -> st.SearchStrategy[bytes]:
    """Opus packets of codes 0 and 1 that lay out (most of a real stream)."""
    return st.builds(
        lambda toc, frame: bytes([toc & 0xFD]) + frame + (frame if toc & 1 else b""),
        st.integers(0, 255),
        st.binary(min_size=0, max_size=200),
    )


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.one_of(valid_packets(), packets(), dave_like(), st.just(b""), st.just(SILENCE_FRAME)),
        max_size=60,
    )
)
def test_judging_packets_at_once_answers_as_each_packet_does(packets: list[bytes]) -> None:
    ends = np.cumsum([len(p) for p in packets], dtype=np.int64)
    starts = ends - np.array([len(p) for p in packets], dtype=np.int64)
    together = judge_packets(b"".join(packets), starts, ends)
    one_by_one = judged_one_by_one(packets)
    assert together.first_bad == one_by_one.first_bad
    if together.first_bad is None:  # past the first bad packet the counts do not matter
        assert together == one_by_one
