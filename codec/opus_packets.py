"""Raw Opus packets from PCM with libopus (through pyogg): one packet per 20 ms frame, the
shape a Discord bot receives per speaker."""

from __future__ import annotations

import ctypes

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


def packet_samples(packet: bytes) -> int:
    """Samples (48 kHz) an Opus packet holds, from its TOC byte, by libopus itself
    (opus_packet_get_nb_samples); InvalidOpusError for a packet libopus cannot read."""
    if not packet:
        return 0  # an empty packet: a lost frame, nothing to count
    samples = _get_nb_samples(packet, len(packet), SAMPLE_RATE)
    if samples < 0:
        raise InvalidOpusError(f"an audio packet is not Opus (libopus error {samples})")
    return int(samples)
