"""The server's bounded pool of worker processes, restarted if one dies.

Separate processes (not threads) keep Whisper's CPU work off the server's event loop and
let a crashed or killed worker take nothing else down; its lease simply expires. The
supervision itself (`SupervisedProcesses`) also keeps a `--processes` server's siblings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("rollscribe.pool")


# Set for every supervised process: the pid of the process that supervises it, so that a
# child can tell that it was orphaned even if that happened before it got to look.
SUPERVISOR_PID_ENV = "ROLLSCRIBE_SUPERVISOR_PID"


# A process that exits soon after it started (the database or the bucket unreachable at its
# start, its schema not this code's) would exit again at once: restarted every second, each
# time an interpreter and its imports (about 1.5 s of CPU) and a traceback, for as long as
# the cause lasts. Such quick exits in a row are restarted after pauses that double, up to
# MAX_RESTART_DELAY_S; a process that ran RAN_LONG_ENOUGH_S or more is restarted as before.
MAX_RESTART_DELAY_S = 60.0
RAN_LONG_ENOUGH_S = 60.0


def restart_delay_s(base_s: float, quick_exits_in_a_row: int) -> float:
    """The pause before starting a process again: `base_s` after one that ran long enough,
    then base, 2 x base, 4 x base ... for exits soon after start, to at most
    MAX_RESTART_DELAY_S."""
    if quick_exits_in_a_row <= 1:
        return base_s
    return min(MAX_RESTART_DELAY_S, base_s * 2.0 ** (quick_exits_in_a_row - 1))


@dataclass
class SupervisedProcesses:
    """`count` processes of `python -m <module> <args>`, each started again if it exits."""

    count: int
    args: list[str]
    module: str = "transcribe.worker"
    what: str = "worker"  # for the log
    restart_delay_s: float = 1.0
    processes: list[asyncio.subprocess.Process | None] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False

    async def start(self) -> None:
        self.processes = [None] * self.count
        self._tasks = [asyncio.create_task(self._supervise(i)) for i in range(self.count)]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p is not None and p.returncode is None]

    async def _supervise(self, slot: int) -> None:
        quick_exits = 0
        while not self._stopping:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                *self.args,
                env={**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())},
            )
            self.processes[slot] = process
            code = await process.wait()
            if self._stopping:
                return
            ran_s = time.monotonic() - started
            quick_exits = quick_exits + 1 if ran_s < RAN_LONG_ENOUGH_S else 0
            delay = restart_delay_s(self.restart_delay_s, quick_exits)
            log.warning(
                "%s %s exited with %s after %.1f s; restarting in %.1f s",
                *(self.what, process.pid, code, ran_s, delay),
            )
            await asyncio.sleep(delay)

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping = True
        for process in self.processes:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self.processes:
            if process is None:
                continue
            try:
                async with asyncio.timeout(timeout_s):  # not wait_for: see storage/event_feed
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class WorkerPool(SupervisedProcesses):
    def ready_count(self, ready_dir: Path) -> int:
        """Live workers that wrote their ready marker (model loaded)."""
        return sum(1 for pid in self.pids if (ready_dir / str(pid)).exists())
