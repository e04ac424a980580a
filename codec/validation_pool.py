"""Ogg Opus validation in a worker process, off the server's interpreter.

Validation walks every page and packet in Python. On a thread it holds the GIL while it
does, and the event loop (which runs every request and every write transaction) waits for
the GIL instead of working: with 200 clients uploading 90 KB segments, validating on
threads halved the server's requests per second against not validating at all
(`bench/README.md`, "small uploads"). A worker process validates on another core.

The process starts with "forkserver", not by forking: the server has threads (aiosqlite's,
the default executor's), and forking a process with threads can copy a held lock.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from codec.validate import OpusStreamInfo, validate_ogg_opus


class ValidationPool:
    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("forkserver"),
            )
        return self._pool

    async def validate(self, path: Path) -> OpusStreamInfo:
        """As `validate_ogg_opus`: raises InvalidOpusError for bytes that are not valid."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), validate_ogg_opus, path)
        except BrokenProcessPool:
            # The worker died (killed, out of memory): start a new one and try once more,
            # so that one lost process never fails a chunk that is fine.
            self.close()
            return await loop.run_in_executor(self._executor(), validate_ogg_opus, path)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
