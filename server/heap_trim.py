"""Gives freed heap memory back to the system now and then (glibc's `malloc_trim`).

A long-running server allocates and frees a little for every request on several threads
(aiosqlite's connections, the executor's), and glibc keeps what was freed in its arenas
rather than returning it, so the resident size creeps up with the requests served even
though nothing is kept: with 50 clients uploading small chunks, RSS rose about 3 MiB for
every 1,000 uploads, and one `malloc_trim(0)` after 4,000 gave back 5.6 of the 9 MiB grown
(`bench/README.md`, "A long-running server and many uploads"). Python has no binding for
it; ctypes calls it. On a C library without it (musl, macOS) this does nothing. The same
goes for the cap on glibc's arenas below.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_EVERY_S = 10.0
# glibc gives each thread that allocates its own arena, up to 8 per core, and keeps what each
# arena freed. The server's threads (aiosqlite's connections, the executor's) mostly wait;
# two arenas serve them. Measured on a server holding 20,000 chunks: three bursts of 50
# meeting creations grew RSS by 3.5, 3.6 and 5.2 MiB with the default arenas, by 2.1, 1.7
# and 0 with two; 10 /metrics scrapes at once by 21.6 MiB, by 0 with two (`bench/README.md`,
# "A long-running server and many uploads").
ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def limit_arenas(count: int = ARENAS) -> bool:
    """Caps glibc's malloc arenas for the threads started from now on (the process's
    environment could, as MALLOC_ARENA_MAX, but only before it starts). False where the C
    library has no `mallopt` or refuses."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


class HeapTrimmer:
    def __init__(self, every_s: float = TRIM_EVERY_S) -> None:
        self.every_s = every_s
        self.trim = _malloc_trim()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.trim is not None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self.trim is not None
        while True:
            await asyncio.sleep(self.every_s)
            # A millisecond or a few; ctypes lets go of the GIL for the call, so on a thread
            # it never holds up the loop.
            await asyncio.to_thread(self.trim)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
