"""Muxes already-encoded Opus packets into Ogg pages with libogg (through pyogg), without
re-encoding: what a Discord adapter does with the packets it receives."""

from __future__ import annotations

import ctypes
import struct

from pyogg import ogg

PRE_SKIP = 312
FLUSH_EVERY_SAMPLES = 48000  # a page at least every second, so a streaming upload moves


def opus_head(channels: int, pre_skip: int, input_rate: int) -> bytes:
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, 0, 0)


def opus_tags(vendor: str) -> bytes:
    raw = vendor.encode()
    return b"OpusTags" + struct.pack("<I", len(raw)) + raw + struct.pack("<I", 0)


class OggOpusMuxer:
    """`write_packet` returns the bytes of the pages that became complete; `close` the rest,
    ending with the end-of-stream page."""

    def __init__(
        self,
        serial: int,
        channels: int = 1,
        pre_skip: int = PRE_SKIP,
        input_sample_rate: int = 48000,
        vendor: str = "rollscribe",
    ) -> None:
        self._state = ogg.ogg_stream_state()
        ogg.ogg_stream_init(ctypes.byref(self._state), serial & 0x7FFFFFFF)
        self._packetno = 0
        self._last_flush_granule = 0
        self._pending: tuple[bytes, int] | None = None  # held back: the last one carries EOS
        self._closed = False
        self.pre_skip = pre_skip
        headers = self._packet_in(opus_head(channels, pre_skip, input_sample_rate), 0, bos=True)
        # RFC 7845: each header packet on its own page(s).
        self._header_bytes = headers + self._pages(flush=True)
        self._header_bytes += self._packet_in(opus_tags(vendor), 0) + self._pages(flush=True)
        self._headers_sent = False

    def _packet_in(self, data: bytes, granule: int, bos: bool = False, eos: bool = False) -> bytes:
        buffer = (ctypes.c_ubyte * len(data)).from_buffer_copy(data) if data else None
        packet = ogg.ogg_packet()
        packet.packet = ctypes.cast(buffer, ogg.c_uchar_p) if buffer is not None else None
        packet.bytes = len(data)
        packet.b_o_s = int(bos)
        packet.e_o_s = int(eos)
        packet.granulepos = granule
        packet.packetno = self._packetno
        self._packetno += 1
        if ogg.ogg_stream_packetin(ctypes.byref(self._state), ctypes.byref(packet)) != 0:
            raise RuntimeError("ogg_stream_packetin failed")
        return b""

    def _pages(self, flush: bool) -> bytes:
        out = bytearray()
        page = ogg.ogg_page()
        take = ogg.ogg_stream_flush if flush else ogg.ogg_stream_pageout
        while take(ctypes.byref(self._state), ctypes.byref(page)) != 0:
            out += ctypes.string_at(page.header, page.header_len)
            out += ctypes.string_at(page.body, page.body_len)
        return bytes(out)

    def header_pages(self) -> bytes:
        if self._headers_sent:
            return b""
        self._headers_sent = True
        return self._header_bytes

    def write_packet(self, packet: bytes, granule: int) -> bytes:
        """`granule`: 48 kHz samples at the end of this packet, pre-skip included."""
        if self._closed:
            raise RuntimeError("muxer is closed")
        out = self.header_pages()
        if self._pending is not None:
            self._packet_in(*self._pending)
        self._pending = (packet, granule)
        flush = granule - self._last_flush_granule >= FLUSH_EVERY_SAMPLES
        if flush:
            self._last_flush_granule = granule
        return out + self._pages(flush=flush)

    def close(self) -> bytes:
        """Remaining pages; the last packet carries end-of-stream."""
        if self._closed:
            return b""
        self._closed = True
        out = self.header_pages()
        if self._pending is None:
            # No audio at all: one silence frame keeps the stream valid and ends it.
            self._pending = (b"\xf8\xff\xfe", self.pre_skip + 960)
        packet, granule = self._pending
        self._packet_in(packet, granule, eos=True)
        out += self._pages(flush=True)
        ogg.ogg_stream_clear(ctypes.byref(self._state))
        return out
