"""Raw Opus packets from PCM with libopus (through pyogg): one packet per 20 ms frame, the
shape a Discord bot receives per speaker."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
from pyogg import opus

from codec.errors import InvalidOpusError

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
MAX_PACKET = 4000
# Discord's own "silence" frame: a valid 20 ms CELT packet that decodes to silence.
SILENCE_FRAME = b"\xf8\xff\xfe"


class OpusPacketEncoder:
    def __init__(self, channels: int = 1, bitrate: int = 24000) -> None:
        self.channels = channels
        error = ctypes.c_int()
        self._encoder = opus.opus_encoder_create(
            SAMPLE_RATE, channels, opus.OPUS_APPLICATION_VOIP, ctypes.byref(error)
        )
        if error.value != opus.OPUS_OK:
            raise RuntimeError(f"opus_encoder_create failed: {error.value}")
        # opus_encoder_ctl is variadic: call it through libopus directly with a plain int.
        opus.libopus.opus_encoder_ctl(self._encoder, opus.OPUS_SET_BITRATE_REQUEST, bitrate)
        self._out = (ctypes.c_ubyte * MAX_PACKET)()

    def encode(self, pcm: np.ndarray) -> bytes:
        """Exactly one 20 ms frame of int16 samples (960 per channel) -> one packet."""
        frame = np.ascontiguousarray(pcm, dtype=np.int16)
        if frame.size != FRAME_SAMPLES * self.channels:
            raise ValueError(f"expected {FRAME_SAMPLES * self.channels} samples, got {frame.size}")
        size = opus.opus_encode(
            self._encoder,
            frame.ctypes.data_as(opus.opus_int16_p),
            FRAME_SAMPLES,
            ctypes.cast(self._out, opus.c_uchar_p),
            MAX_PACKET,
        )
        if size < 0:
            raise RuntimeError(f"opus_encode failed: {size}")
        return bytes(self._out[:size])

    def __del__(self) -> None:
        encoder = getattr(self, "_encoder", None)
        if encoder is not None:
            opus.opus_encoder_destroy(encoder)


# Our own typed pointer: pyogg declares the packet as a zero-length array type, which no
# buffer of real length passes.
_get_nb_samples = opus.libopus["opus_packet_get_nb_samples"]
_get_nb_samples.restype = ctypes.c_int
_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]


# opus_packet_parse walks a packet's frame layout (code 0-3 framing, frame lengths, padding)
# as the decoder would, without decoding: bytes that are not Opus (ciphertext, noise) almost
# never lay out as valid frames, and it costs a microsecond where decoding costs a thousand.
_parse = opus.libopus["opus_packet_parse"]
_parse.restype = ctypes.c_int
_parse.argtypes = [
    ctypes.c_char_p,
    ctypes.c_int32,
    ctypes.c_void_p,  # out_toc (NULL: not wanted)
    ctypes.c_void_p,  # frames[48] (NULL: not wanted)
    ctypes.c_void_p,  # size[48], required
    ctypes.c_void_p,  # payload_offset (NULL)
]
_Sizes = ctypes.c_int16 * 48  # a packet holds at most 48 frames

# Discord's end-to-end encryption (DAVE) ends every encrypted frame with a trailer: the
# supplemental data's size (one byte, trailer included) and the magic marker 0xFAFA.
DAVE_MARKER = b"\xfa\xfa"
DAVE_MIN_SUPPLEMENTAL = 11  # 8-byte truncated tag, 1-byte nonce, size byte, marker


def has_dave_trailer(packet: bytes) -> bool:
    """Whether a packet ends like a DAVE-encrypted frame (one real Opus packet in 65,536
    does by chance, so judge a stream by how many of its packets do)."""
    if len(packet) < DAVE_MIN_SUPPLEMENTAL or not packet.endswith(DAVE_MARKER):
        return False
    return DAVE_MIN_SUPPLEMENTAL <= packet[-3] <= len(packet)


def _libopus_layout_error(packet: bytes) -> str | None:
    sizes = _Sizes()  # per call: validation runs in several threads at once
    frames = _parse(packet, len(packet), None, None, sizes, None)
    if frames < 0:
        return f"libopus error {frames}: {_ERRORS.get(frames, 'unknown')}"
    return None


_ERRORS = {-1: "bad argument", -4: "invalid packet"}
_INVALID_PACKET = f"libopus error -4: {_ERRORS[-4]}"
# What a frame's bytes may not exceed when no length is coded for it (RFC 6716 3.2.1):
# libopus's opus_packet_parse refuses a longer implicit frame with OPUS_INVALID_PACKET.
MAX_FRAME_BYTES = 1275


def packet_layout_error(packet: bytes) -> str | None:
    """Why libopus cannot lay this packet out as Opus frames, or None when it can."""
    if not packet:
        return None  # an empty packet: a lost frame (RFC 7845 allows it)
    code = packet[0] & 0x3
    # Codes 0 and 1 (one frame, two of equal size: what encoders write almost always) are
    # judged here by opus_packet_parse's own two rules for them: every chunk's validation
    # lays out each of its ~1,500 packets, and the ctypes call cost more than the rest of
    # the packet's checks together (bench/README.md, "Many small uploads"). Codes 2 and 3
    # (coded lengths, padding) go to libopus. tests/test_opus_packet_rules.py holds the
    # two to the same answers.
    if code == 0:
        return _INVALID_PACKET if len(packet) - 1 > MAX_FRAME_BYTES else None
    if code == 1:
        payload = len(packet) - 1
        return _INVALID_PACKET if payload & 1 or payload // 2 > MAX_FRAME_BYTES else None
    return _libopus_layout_error(packet)


def _libopus_samples(packet: bytes) -> int:
    return int(_get_nb_samples(packet, len(packet), SAMPLE_RATE))


# opus_packet_get_nb_samples reads only the TOC byte and, for code 3, the frame count in the
# second byte: its answer for a packet's first two bytes is its answer for the packet. Kept
# per packet head, each asked of libopus once: at toc * 256 + second byte for a packet of two
# bytes or more, at 65,536 + toc for a packet of the TOC alone (`judge_packets` looks up all
# of a page's packets at once).
_NO_ANSWER = np.iinfo(np.int32).min
_SAMPLES_BY_HEAD = np.full(65_536 + 256, _NO_ANSWER, dtype=np.int32)


def _head_key(head: int) -> bytes:
    return bytes([head - 65_536]) if head >= 65_536 else bytes([head >> 8, head & 0xFF])


def _samples_of_heads(heads: np.ndarray) -> np.ndarray:
    """What libopus says of each packet head (negative: not Opus), asked once per head."""
    for head in np.unique(heads[_SAMPLES_BY_HEAD[heads] == _NO_ANSWER]).tolist():
        _SAMPLES_BY_HEAD[head] = _libopus_samples(_head_key(head))
    return _SAMPLES_BY_HEAD[heads]


def packet_samples(packet: bytes) -> int:
    """Samples (48 kHz) an Opus packet holds, from its TOC byte, by libopus itself
    (opus_packet_get_nb_samples); InvalidOpusError for a packet libopus cannot read."""
    if not packet:
        return 0  # an empty packet: a lost frame, nothing to count
    head = packet[0] * 256 + packet[1] if len(packet) >= 2 else 65_536 + packet[0]
    samples = int(_SAMPLES_BY_HEAD[head])
    if samples == _NO_ANSWER:
        samples = _SAMPLES_BY_HEAD[head] = _libopus_samples(_head_key(head))
    if samples < 0:
        raise InvalidOpusError(f"an audio packet is not Opus (libopus error {samples})")
    return samples


# The same rules for all the audio packets of an Ogg page at once. Validation walks every
# packet of every chunk (about 1,500 in 30 s): one Python call per packet and rule cost
# 1.3 ms per chunk, most of a small upload's validation, which runs on one of the server's
# cores beside it (bench/README.md, "Many small uploads"). These take numpy arrays of the
# packets' bounds in one buffer; `tests/test_opus_packet_rules.py` holds them to the
# per-packet functions above.


@dataclass(frozen=True)
class PacketsJudged:
    substantive: int  # packets longer than a silence frame
    encrypted: int  # packets that end like a DAVE-encrypted frame
    samples: int  # what the packets read as Opus hold (`packet_samples`)
    first_bad: int | None  # the first packet that is not Opus (`packet_layout_error`, or
    # a head libopus cannot count); the counts above then cover only the packets before it


def judge_packets(buffer: bytes, starts: np.ndarray, ends: np.ndarray) -> PacketsJudged:
    """`has_dave_trailer`, `packet_layout_error` and `packet_samples` for the packets
    `buffer[starts[i]:ends[i]]`, in order, as a loop over them would answer."""
    if len(starts) == 0:
        return PacketsJudged(0, 0, 0, None)
    # (Only empty packets in no bytes: one byte to index, masked out as every byte past a
    # packet's end is.)
    data = np.frombuffer(buffer or b"\0", dtype=np.uint8)
    last = len(data) - 1
    lengths = ends - starts
    # Indexes of bytes a packet may not have: clipped, and masked out below by its length.
    first_byte = data[np.minimum(starts, last)]
    second_byte = data[np.minimum(starts + 1, last)]
    trailer = lengths >= DAVE_MIN_SUPPLEMENTAL
    size_byte = data[np.clip(ends - 3, 0, last)]
    dave = (
        trailer
        & (data[np.clip(ends - 1, 0, last)] == DAVE_MARKER[1])
        & (data[np.clip(ends - 2, 0, last)] == DAVE_MARKER[0])
        & (size_byte >= DAVE_MIN_SUPPLEMENTAL)
        & (size_byte <= lengths)
    )
    judged = (lengths > 0) & ~dave  # an empty packet is a lost frame: nothing to judge
    code = first_byte & 0x3
    payload = lengths - 1
    bad = judged & (
        ((code == 0) & (payload > MAX_FRAME_BYTES))
        | ((code == 1) & (((payload & 1) == 1) | (payload // 2 > MAX_FRAME_BYTES)))
    )
    for i in np.flatnonzero(judged & (code >= 2)):  # coded lengths, padding: libopus
        bad[i] = _libopus_layout_error(buffer[starts[i] : ends[i]]) is not None
    heads = np.where(
        lengths >= 2,
        first_byte.astype(np.int32) * 256 + second_byte,
        65_536 + first_byte.astype(np.int32),
    )
    samples = np.where(judged, _samples_of_heads(np.where(judged, heads, 0)), 0)
    bad |= judged & (samples < 0)
    # Past the first packet that is not Opus nothing counts (the validator stops there).
    first_bad = int(np.argmax(bad)) if bad.any() else None
    counted = slice(0, len(starts) if first_bad is None else first_bad)
    return PacketsJudged(
        substantive=int(np.count_nonzero(lengths[counted] > len(SILENCE_FRAME))),
        encrypted=int(np.count_nonzero(dave[counted])),
        samples=int(samples[counted].sum()),
        first_bad=first_bad,
    )
