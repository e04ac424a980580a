"""`--processes N`: the first server process starts N-1 more on the same port.

Each binds the port with SO_REUSEPORT, so the kernel spreads connections over them; they
share the database and the blob store like nodes of a deployment (an upload's lock holds
across processes: `storage/upload_locks.py`). Only the first runs the recovery sweeps,
webhook deliveries and the worker pool; the others serve HTTP. A sibling that exits is
started again by the same supervision as the workers (`transcribe/pool.py`); its
connections are lost, nothing acknowledged is (offsets are committed before they are
answered).

Why not gunicorn's aiohttp worker: it would own the whole start-up (arguments, signals,
the first process's duties), for what is a few supervised child processes here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from transcribe.pool import SUPERVISOR_PID_ENV, SupervisedProcesses


def metrics_folder(data_dir: Path) -> Path:
    """Where every process keeps its counters for /metrics to add up (prometheus-client's
    multiprocess mode). Set before prometheus_client is imported, emptied at each start."""
    folder = data_dir / "run" / f"metrics-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def sibling_processes(count: int, argv: list[str], port: int) -> SupervisedProcesses:
    # The first process's own arguments, then what makes a sibling (later flags win).
    args = ["serve", *argv, "--processes", "1", "--workers", "0", "--port", str(port), "--sibling"]
    return SupervisedProcesses(count, args, module="server.cli", what="server process")


async def stop_when_orphaned(stop: asyncio.Event, every_s: float = 1.0) -> None:
    """A sibling serves for the process that started it. If that one dies without stopping
    it (SIGKILL, the OOM killer), the sibling must not go on serving the port alone, with
    nobody running the sweeps or restarting it: it stops like on SIGTERM."""
    parent = int(os.environ.get(SUPERVISOR_PID_ENV) or os.getppid())
    while not stop.is_set():
        await asyncio.sleep(every_s)
        if os.getppid() != parent:
            stop.set()
