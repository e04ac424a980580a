"""A corpus of hostile Ogg Opus inputs: each is rejected with a reason that says what is
wrong, by the validator alone and through a running server, and nothing else is affected."""

from __future__ import annotations

import ctypes
import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests
from pyogg import ogg

from codec.errors import InvalidOpusError
from codec.ogg_mux import OggOpusMuxer
from codec.opus_packets import SILENCE_FRAME, OpusPacketEncoder
from codec.validate import validate_ogg_opus
from tests.conftest import create_meeting, metadata, tus_create, tus_patch

FRAME = 960  # 20 ms at 48 kHz


def _mux(packets: list[bytes]) -> bytes:
    mux = OggOpusMuxer(serial=11)
    out = bytearray()
    for i, packet in enumerate(packets, start=1):
        out += mux.write_packet(packet, mux.pre_skip + i * FRAME)
    return bytes(out + mux.close())


def _speech_packets(count: int) -> list[bytes]:
    """Real Opus packets of a voiced-sounding signal (a vowel-like harmonic mix)."""
    encoder = OpusPacketEncoder()
    t = np.arange(count * FRAME) / 48000
    signal = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 700, 1100), 1))
    pcm = (signal * 6000).astype(np.int16)
    return [encoder.encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(count)]


def _honest() -> bytes:
    return _mux(_speech_packets(150))


def _pages(stream: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each page."""
    out, at = [], 0
    while at < len(stream):
        segments = stream[at + 26]
        body = sum(stream[at + 27 : at + 27 + segments])
        out.append((at, 27 + segments + body))
        at += 27 + segments + body
    return out


def _truncated_page() -> bytes:
    stream = _honest()
    offset, length = _pages(stream)[-2]
    return stream[: offset + length // 2]


def _wrong_crc() -> bytes:
    stream = bytearray(_honest())
    offset, length = _pages(bytes(stream))[2]
    stream[offset + length - 5] ^= 0x40  # one bit of audio, the CRC no longer matches
    return bytes(stream)


def _huge_page_size() -> bytes:
    """A page whose lacing values promise 255 x 255 bytes that never come."""
    stream = _honest()
    offset, _ = _pages(stream)[2]
    header = bytearray(stream[offset : offset + 27])
    header[26] = 255
    return stream[:offset] + bytes(header) + b"\xff" * 255 + b"\x00" * 1000


def _endless_packet() -> bytes:
    """One 'packet' spread over pages until it is larger than any Opus packet."""
    return _mux([b"\xfc" + b"\x00" * 70_000])


def _random_in_valid_framing() -> bytes:
    rng = random.Random(20)
    return _mux([rng.randbytes(rng.randint(20, 120)) for _ in range(200)])


def _dave_ciphertext() -> bytes:
    """Opus frames as Discord's DAVE leaves them when nobody decrypts: ciphertext, an 8-byte
    tag, a nonce, the supplemental size and the 0xFAFA marker; silence frames pass through."""
    rng = random.Random(21)
    packets = []
    for packet in _speech_packets(150):
        if rng.random() < 0.3:
            packets.append(SILENCE_FRAME)
            continue
        nonce = bytes([rng.randint(0, 127)])
        supplemental = 8 + len(nonce) + 1 + 2
        packets.append(
            rng.randbytes(len(packet))
            + rng.randbytes(8)
            + nonce
            + bytes([supplemental])
            + b"\xfa\xfa"
        )
    return _mux(packets)


def _vorbis() -> bytes:
    """An Ogg stream whose first page holds a Vorbis identification header."""
    stream = _honest()
    offset, length = _pages(stream)[0]
    head = b"\x01vorbis" + struct.pack("<IBIiii", 0, 1, 48000, 0, 96000, 0) + b"\xb8\x01"
    header = bytearray(stream[offset : offset + 27]) + bytes([len(head)])
    header[26] = 1
    return _with_crc(bytes(header), head) + stream[offset + length :]


def _with_crc(header: bytes, body: bytes) -> bytes:
    """The page with its CRC set by libogg."""
    header_buf = ctypes.create_string_buffer(header, len(header))
    body_buf = ctypes.create_string_buffer(body, len(body))
    page = ogg.ogg_page()
    page.header = ctypes.cast(header_buf, ogg.c_uchar_p)
    page.header_len = len(header)
    page.body = ctypes.cast(body_buf, ogg.c_uchar_p)
    page.body_len = len(body)
    ogg.ogg_page_checksum_set(ctypes.byref(page))
    return header_buf.raw[: len(header)] + body


def _random_bytes() -> bytes:
    return random.Random(22).randbytes(5000)


def _chained() -> bytes:
    return _honest() + _honest()


CORPUS: dict[str, tuple[Callable[[], bytes], str]] = {
    "truncated page": (_truncated_page, "truncated"),
    "wrong CRC": (_wrong_crc, "corrupt Ogg data"),
    "huge page size": (_huge_page_size, "truncated"),
    "packet larger than Opus allows": (_endless_packet, "larger than 61440 bytes"),
    "random bytes in valid framing": (_random_in_valid_framing, "is not an Opus packet"),
    "DAVE ciphertext": (_dave_ciphertext, "(DAVE) trailer"),
    "non-Opus Ogg (Vorbis)": (_vorbis, "missing OpusHead"),
    "random bytes": (_random_bytes, "not an Ogg stream"),
    "chained streams": (_chained, "after the end-of-stream page"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_the_validator_names_what_is_wrong(name: str, tmp_path: Path) -> None:
    build, reason = CORPUS[name]
    path = tmp_path / "chunk.opus"
    path.write_bytes(build())
    with pytest.raises(InvalidOpusError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        validate_ogg_opus(path)


def test_the_honest_streams_the_corpus_starts_from_are_valid(tmp_path: Path) -> None:
    # Without this, every hostile case above could be failing for the wrong reason.
    path = tmp_path / "chunk.opus"
    path.write_bytes(_honest())
    assert validate_ogg_opus(path).duration_s == pytest.approx(3.0, abs=0.03)
    # A stream that is mostly silence frames with speech between is not mistaken for DAVE.
    mixed = [SILENCE_FRAME if i % 3 else p for i, p in enumerate(_speech_packets(150))]
    path.write_bytes(_mux(mixed))
    assert validate_ogg_opus(path).packets == 150


def test_a_few_packets_that_end_like_dave_by_chance_are_not_ciphertext(tmp_path: Path) -> None:
    packets = _speech_packets(300)
    # 2 of 300 real packets get bytes that look like a DAVE trailer: under the 10 % share.
    for i in (50, 200):
        packets[i] = packets[i][:-3] + bytes([12]) + b"\xfa\xfa"
    path = tmp_path / "chunk.opus"
    path.write_bytes(_mux(packets))
    assert validate_ogg_opus(path).packets == 300


def test_the_first_problem_in_the_stream_is_named(tmp_path: Path, monkeypatch) -> None:
    """Packets are judged many pages at a time (codec/validate.py, `JUDGE_EVERY`); a
    problem in a later page is still named only after those of the packets before it,
    whether those were judged already or not: the answer of a walk packet by packet."""

    def muxed(packets: list[bytes]) -> bytes:
        mux = OggOpusMuxer(serial=11)
        stream = bytearray()
        for i, packet in enumerate(packets, start=1):
            back = 250 if i >= 300 else 0  # the granule position goes backwards at 300
            stream += mux.write_packet(packet, mux.pre_skip + (i - back) * FRAME)
        return bytes(stream + mux.close())

    packets = _speech_packets(400)
    honest = packets[30]
    packets[30] = b"\x00" + b"\x55" * 1300  # one frame longer than Opus allows
    path = tmp_path / "chunk.opus"
    for judge_every in (1 << 20, 1, 5000):
        monkeypatch.setattr("codec.validate.JUDGE_EVERY", judge_every)
        path.write_bytes(muxed(packets))
        with pytest.raises(InvalidOpusError, match="audio packet 30 is not an Opus packet"):
            validate_ogg_opus(path)
        packets[30] = honest  # without it, the later problem is the one named
        path.write_bytes(muxed(packets))
        with pytest.raises(InvalidOpusError, match="granule position goes backwards"):
            validate_ogg_opus(path)
        packets[30] = b"\x00" + b"\x55" * 1300


def test_each_hostile_chunk_ends_rejected_and_the_server_carries_on(protocol_server) -> None:
    base = protocol_server.url
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    names = sorted(CORPUS)
    for seq, name in enumerate(names):
        body = CORPUS[name][0]()
        meta = metadata(meeting_id=meeting_id, track="mic", seq=seq, start_ms=seq * 3000)
        url = tus_create(base, len(body), meta).headers["Location"]
        assert tus_patch(url, 0, body).status_code == 204, name
    chunks = requests.get(f"{base}/meetings/{meeting_id}", timeout=10).json()["chunks"]
    by_seq = {c["seq"]: c for c in chunks}
    for seq, name in enumerate(names):
        assert by_seq[seq]["state"] == "rejected", name
        assert CORPUS[name][1] in by_seq[seq]["error"], (name, by_seq[seq]["error"])
    # Another meeting's honest chunk goes through as before.
    other = create_meeting(base, tracks=["mic"])["id"]
    body = _honest()
    meta = metadata(meeting_id=other, track="mic", seq=0, start_ms=0)
    url = tus_create(base, len(body), meta).headers["Location"]
    assert tus_patch(url, 0, body).status_code == 204
    chunk = requests.get(f"{base}/meetings/{other}", timeout=10).json()["chunks"][0]
    assert chunk["state"] in ("uploaded", "queued")
