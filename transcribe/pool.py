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
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("rollscribe.pool")


# Set for every supervised process: the pid of the process that supervises it, so that a
# child can tell that it was orphaned even if that happened before it got to look.
SUPERVISOR_PID_ENV = "ROLLSCRIBE_SUPERVISOR_PID"


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
        while not self._stopping:
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
            log.warning("%s %s exited with %s; restarting", self.what, process.pid, code)
            await asyncio.sleep(self.restart_delay_s)

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
