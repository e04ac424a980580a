"""Ogg Opus validation in worker processes, off the server's interpreter.

Validation walks every page and packet. On a thread it holds the GIL while it does, and the
event loop (which runs every request and every write transaction) waits for the GIL instead
of working: with 200 clients uploading 90 KB segments, validating on threads halved the
server's requests per second against not validating at all (`bench/README.md`, "small
uploads"). A worker process validates on another core.

The workers are plain child processes (`codec/validation_worker.py`) that the event loop
talks to over their stdin and stdout, one line per request and answer; a request is a path,
so nothing but a file name and a few numbers cross. This is a small pool of our own, not
`concurrent.futures.ProcessPoolExecutor` (used before): that one hands every job through two
threads of the server's process (its manager thread and its call queue's feeder), and each
such wake-up passes the GIL back and forth with the event loop; under 200 uploading clients
those two threads made about 20 futex calls per upload, the pool's share of the server's
system time (`bench/README.md`, "Many small uploads"). Here a job is a write to a pipe and a
line read by the loop's own poll, with no thread in between. The workers are started by
exec, never by forking a server that has threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codec.errors import InvalidOpusError
from codec.validate import OpusStreamInfo

# The folder holding the `codec` package: a worker imports it from there, however the server
# itself was started.
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


class ValidationFailed(RuntimeError):
    """The worker could not validate the file (it could not be read): not a verdict on its
    bytes."""


class _WorkerDied(Exception):
    pass


class _Worker:
    """One worker process and the requests it has not answered yet, oldest first (it answers
    in the order asked)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.unanswered: collections.deque[asyncio.Future[dict[str, Any]]] = collections.deque()
        self.reader: asyncio.Task[None] | None = None

    def ask(self, path: Path) -> asyncio.Future[dict[str, Any]]:
        stdin = self.process.stdin
        assert stdin is not None
        if stdin.is_closing():
            raise _WorkerDied
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.unanswered.append(answer)
        # A line of a few hundred bytes: the pipe takes it at once, so no drain (the worker
        # reads its requests as it goes, and a dead one is noticed by the reader).
        stdin.write(json.dumps(str(path)).encode() + b"\n")
        return answer

    async def read_answers(self, on_exit: Callable[[_Worker], None]) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                answer = self.unanswered.popleft()
                if not answer.done():  # its caller may have gone (a cancelled request)
                    answer.set_result(json.loads(line))
        finally:
            on_exit(self)
            for answer in self.unanswered:
                if not answer.done():
                    answer.set_exception(_WorkerDied())
            self.unanswered.clear()
            # Its stdout ended: it exited, or is of no more use. Its stdin closed and the
            # process reaped here, so that no process or pipe outlives it.
            if self.process.stdin is not None:
                self.process.stdin.close()
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            await self.process.wait()


class ValidationPool:
    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self._workers: list[_Worker] = []
        self._starting = asyncio.Lock()
        self.worker_args: tuple[str, ...] = ("-m", "codec.validation_worker")

    def worker_pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    async def start(self) -> None:
        """Starts the workers now rather than at the first chunk. Their start-up (Python,
        numpy, libopus: about 0.3 s of CPU each) would otherwise fall on the first chunk a
        server takes, adding that much to its acknowledgement. Returns once they are
        spawned; they import meanwhile, and a request written before then waits in the pipe."""
        async with self._starting:
            while len(self._workers) < self.processes:
                await self._start_worker()

    async def _start_worker(self) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PROJECT_ROOT, env.get("PYTHONPATH")]))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.worker_args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        worker = _Worker(process)
        worker.reader = asyncio.create_task(worker.read_answers(self._forget))
        self._workers.append(worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)

    async def _least_busy(self) -> _Worker:
        if len(self._workers) < self.processes:
            # A pool nobody started, or one whose worker died: made whole again first. (The
            # last worker started is in the list when `start` returns: nothing awaited after.)
            await self.start()
        return min(self._workers, key=lambda worker: len(worker.unanswered))

    async def _validate_once(self, path: Path) -> OpusStreamInfo:
        answer = await (await self._least_busy()).ask(path)
        if "info" in answer:
            return OpusStreamInfo(**answer["info"])
        if "invalid" in answer:
            raise InvalidOpusError(answer["invalid"])
        raise ValidationFailed(f"validating {path.name}: {answer['error']}")

    async def validate(self, path: Path) -> OpusStreamInfo:
        """As `validate_ogg_opus`: raises InvalidOpusError for bytes that are not valid."""
        try:
            return await self._validate_once(path)
        except _WorkerDied:
            pass
        # The worker died (killed, out of memory): a new one is started and asked once more,
        # so that one lost process never fails a chunk that is fine.
        try:
            return await self._validate_once(path)
        except _WorkerDied:
            raise ValidationFailed(
                f"validating {path.name}: two validation workers ended before answering"
            ) from None

    async def close(self) -> None:
        """Ends the workers: their stdin closes, and they exit when they have read it all."""
        workers, self._workers = self._workers, []
        for worker in workers:
            if worker.process.stdin is not None:
                worker.process.stdin.close()
        for worker in workers:
            try:
                async with asyncio.timeout(5):
                    await worker.process.wait()
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                await asyncio.gather(worker.reader, return_exceptions=True)
