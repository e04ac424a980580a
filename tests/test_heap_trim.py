"""server/heap_trim.py: glibc's malloc_trim is found, and called periodically until stop."""

from __future__ import annotations

import asyncio

from server.heap_trim import HeapTrimmer, _malloc_trim


def test_malloc_trim_is_found_on_glibc() -> None:
    trim = _malloc_trim()
    assert trim is not None  # Debian: glibc
    assert trim() in (0, 1)  # 1: memory was given back, 0: there was none to give


def test_trims_periodically_until_stopped() -> None:
    calls: list[int] = []

    async def main() -> int:
        trimmer = HeapTrimmer(every_s=0.02)
        trimmer.trim = lambda: calls.append(1)
        trimmer.start()
        await asyncio.sleep(0.2)
        await trimmer.stop()
        after_stop = len(calls)
        await asyncio.sleep(0.1)
        assert len(calls) == after_stop
        return after_stop

    assert asyncio.run(main()) >= 3
