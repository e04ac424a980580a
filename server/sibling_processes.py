"""`--processes N`: the first server process starts N-1 more on the same port.

Each binds the port with SO_REUSEPORT, so the kernel spreads connections over them; they
share the database and the blob store like nodes of a deployment (an upload's lock holds
across processes: `storage/upload_locks.py`). Only the first runs the recovery sweeps,
webhook deliveries and the worker pool; the others serve HTTP. A sibling that exits is
started again (its connections are lost, nothing acknowledged is: offsets are committed
before they are answered).

Why not gunicorn's aiohttp worker: it would own the whole start-up (arguments, signals,
the first process's duties), for what is a loop over a few child processes here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

log = logging.getLogger("rollscribe.processes")

RESTART_DELAY_S = 1.0


def metrics_folder(data_dir: Path) -> Path:
    """Where every process keeps its counters for /metrics to add up (prometheus-client's
    multiprocess mode). Set before prometheus_client is imported, emptied at each start."""
    folder = data_dir / "run" / f"metrics-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


class SiblingProcesses:
    def __init__(self, count: int, argv: list[str], port: int) -> None:
        self.count = count
        # The first process's own arguments, then what makes a sibling (later flags win).
        self.argv = [
            *argv,
            *("--processes", "1", "--workers", "0", "--port", str(port), "--sibling"),
        ]
        self.processes: list[asyncio.subprocess.Process | None] = [None] * count
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        for slot in range(self.count):
            self._tasks.append(asyncio.create_task(self._keep(slot)))

    async def _keep(self, slot: int) -> None:
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server.cli", "serve", *self.argv
            )
            self.processes[slot] = process
            code = await process.wait()
            if self._stopping:
                return
            log.warning("server process %s exited with %s; starting it again", process.pid, code)
            await asyncio.sleep(RESTART_DELAY_S)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p is not None and p.returncode is None]

    async def stop(self) -> None:
        self._stopping = True
        for process in self.processes:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self.processes:
            if process is None:
                continue
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
