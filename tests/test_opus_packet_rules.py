"""The validator's own answers where it does not ask libopus for each packet: the layout of
code 0 and 1 packets, sample counts kept per first two bytes, and packets taken from the
Ogg pages without copying. Each is held to libopus, or to the packets that were muxed."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from codec.errors import InvalidOpusError
from codec.ogg_mux import OggOpusMuxer
from codec.ogg_pages import OggPageReader
from codec.opus_packets import (
    MAX_FRAME_BYTES,
    _libopus_layout_error,
    _libopus_samples,
    packet_layout_error,
    packet_samples,
)
from codec.validate import PacketAssembler

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


def reassembled(stream: bytes, tmp_path) -> list[bytes]:
    path = tmp_path / "s.opus"
    path.write_bytes(stream)
    assembler = PacketAssembler()
    out: list[tuple[int, bytes]] = []
    for page in OggPageReader(path):
        out += assembler.complete(page)
    assert [number for number, _ in out] == list(range(len(out)))
    return [packet for _, packet in out]


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
@given(MUXED)
def test_packets_come_back_as_they_were_muxed(tmp_path_factory, written: list[bytes]) -> None:
    """Packets of any size, many to a page or spread over several, come out of the pages
    exactly as they went in."""
    mux = OggOpusMuxer(serial=5)
    stream = bytearray()
    for i, packet in enumerate(written, start=1):
        stream += mux.write_packet(packet, mux.pre_skip + i * 960)
    stream += mux.close()
    assert reassembled(bytes(stream), tmp_path_factory.mktemp("mux")) == written


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
