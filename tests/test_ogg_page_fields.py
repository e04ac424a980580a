"""The page fields `codec/ogg_pages.OggPageReader` reads from the header itself are what
libogg's own accessors (ogg_page_granulepos and the others) read from the same bytes."""

from __future__ import annotations

import ctypes

from hypothesis import given, settings
from hypothesis import strategies as st
from pyogg import ogg

from codec.ogg_pages import OggPage, OggPageReader


def _libogg_fields(header: bytes) -> tuple[int, int, int, bool, bool, bool, int]:
    buffer = ctypes.create_string_buffer(header, len(header))
    page = ogg.ogg_page()
    page.header = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_ubyte))
    page.header_len = len(header)
    page.body = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_ubyte))
    page.body_len = 0
    at = ctypes.byref(page)
    return (
        ogg.ogg_page_serialno(at) & 0xFFFFFFFF,
        ogg.ogg_page_pageno(at) & 0xFFFFFFFF,
        ogg.ogg_page_granulepos(at),
        bool(ogg.ogg_page_bos(at)),
        bool(ogg.ogg_page_eos(at)),
        bool(ogg.ogg_page_continued(at)),
        ogg.ogg_page_packets(at),
    )


def _ours(page: OggPage) -> tuple[int, int, int, bool, bool, bool, int]:
    return (
        page.serial,
        page.sequence,
        page.granule,
        page.bos,
        page.eos,
        page.continued,
        page.packets,
    )


HEADERS = st.builds(
    lambda fixed, lacing: b"OggS\x00" + fixed + bytes([len(lacing)]) + lacing,
    st.binary(min_size=21, max_size=21),  # flags, granule, serial, sequence, CRC
    st.binary(max_size=255),
)


@settings(max_examples=2000, deadline=None)
@given(HEADERS)
def test_header_fields_are_libogg_answers(header: bytes) -> None:
    page = OggPageReader.page_of(header, b"", 0)
    assert _ours(page) == _libogg_fields(header)
