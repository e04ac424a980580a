"""server/heap_trim.py: glibc's malloc_trim is found, and called periodically until stop; the
server's threads share two malloc arenas."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from server.heap_trim import HeapTrimmer, _malloc_trim
from tests.server_process import ROOT


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


# Eight threads alive at once each allocate with malloc (bytes objects past pymalloc's
# 512-byte limit); glibc's malloc_stats() then prints one "Arena N:" block per arena, on
# stderr.
ARENAS_USED = """
import ctypes, ctypes.util, sys, threading
from server.heap_trim import limit_arenas
if sys.argv[1] == "limit":
    assert limit_arenas(2)
held = []
together = threading.Barrier(8)  # all alive at once: an ended thread's arena is reused
def allocate():
    together.wait()
    held.append([bytes(4096) for _ in range(256)])
    together.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
"""


def _arenas(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", ARENAS_USED, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stderr.count("Arena ")


def test_the_server_threads_share_two_malloc_arenas() -> None:
    assert _arenas("default") > 2  # each thread its own arena, as glibc does by default
    assert _arenas("limit") == 2
