"""Reads Ogg pages with libogg (through pyogg's ctypes bindings): libogg does the framing
and the CRC check, we only walk the pages it hands back."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pyogg import ogg

from codec.errors import InvalidOpusError

BLOCK = 64 * 1024
# Header type, granule position, serial number, page sequence number, from byte 5.
_FIELDS = struct.Struct("<BqII")

# Two of pyogg 0.6.14a1's declarations are wrong, so take our own typed pointers:
# ogg_sync_buffer returns c_char_p there (a *copy* of libogg's buffer, useless to write
# into), and ogg_sync_pageout returns c_long where libogg returns int, so its -1 (corrupt
# data, bad CRC) reads as 4294967295.
_sync_buffer = ogg.libogg["ogg_sync_buffer"]
_sync_buffer.restype = ctypes.c_void_p
_sync_buffer.argtypes = [ogg.oy_p, ctypes.c_long]
_sync_pageout = ogg.libogg["ogg_sync_pageout"]
_sync_pageout.restype = ctypes.c_int
_sync_pageout.argtypes = [ogg.oy_p, ogg.og_p]


@dataclass(frozen=True)
class OggPage:
    serial: int
    sequence: int
    granule: int
    bos: bool
    eos: bool
    continued: bool
    packets: int  # packets that end on this page
    offset: int  # byte offset of the page in the stream
    header: bytes
    body: bytes


class OggPageReader:
    """Iterates the pages of an Ogg file, block by block (never the whole file in memory)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.trailing_bytes = 0

    @staticmethod
    def page_of(header: bytes, body: bytes, offset: int) -> OggPage:
        """A page libogg has found (framing and CRC checked). Its fields are read from the
        header as libogg's ogg_page_* accessors read them (RFC 3533 section 6): one unpack
        instead of eight calls through ctypes, which were a third of a small chunk's
        validation (`tests/test_ogg_page_fields.py` holds them to libogg's answers)."""
        flags, granule, serial, sequence = _FIELDS.unpack_from(header, 5)
        lacing = header[27 : 27 + header[26]]
        return OggPage(
            serial=serial,
            sequence=sequence,
            granule=granule,
            bos=bool(flags & 0x02),
            eos=bool(flags & 0x04),
            continued=bool(flags & 0x01),
            packets=len(lacing) - lacing.count(255),
            offset=offset,
            header=header,
            body=body,
        )

    def __iter__(self) -> Iterator[OggPage]:
        state = ogg.ogg_sync_state()
        ogg.ogg_sync_init(ctypes.byref(state))
        page = ogg.ogg_page()
        consumed = 0  # bytes handed to libogg that ended up in pages
        try:
            with open(self.path, "rb") as f:
                while True:
                    data = f.read(BLOCK)
                    if data:
                        pointer = _sync_buffer(ctypes.byref(state), len(data))
                        ctypes.memmove(pointer, data, len(data))
                        ogg.ogg_sync_wrote(ctypes.byref(state), len(data))
                    while True:
                        result = _sync_pageout(ctypes.byref(state), ctypes.byref(page))
                        if result == 0:
                            break
                        if result < 0:
                            raise InvalidOpusError(
                                f"corrupt Ogg data (bad capture pattern or CRC) after byte "
                                f"{consumed}"
                            )
                        header = ctypes.string_at(page.header, page.header_len)
                        body = ctypes.string_at(page.body, page.body_len)
                        yield self.page_of(header, body, consumed)
                        consumed += len(header) + len(body)
                    if not data:
                        break
            self.trailing_bytes = state.fill - state.returned
        finally:
            ogg.libogg.ogg_sync_clear(ctypes.byref(state))
