"""Ogg Opus validation in worker processes (codec/validation_pool.py): the same verdicts as
in-process validation, errors carried back, answers to their own requests when many are
asked at once, a dead worker replaced, and no thread of the server's process involved."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codec.errors import InvalidOpusError
from codec.segmenter import OggOpusFileWriter
from codec.validate import validate_ogg_opus
from codec.validation_pool import ValidationFailed, ValidationPool
from tests.server_process import ServerProcess


def _opus(path: Path, seconds: float) -> Path:
    writer = OggOpusFileWriter(path)
    t = np.arange(int(seconds * 48000)) / 48000
    writer.write((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    writer.close()
    return writer.path


def test_same_verdicts_as_in_process(tmp_path: Path) -> None:
    good = _opus(tmp_path / "good.opus", 2.0)
    bad = tmp_path / "bad.opus"
    bad.write_bytes(good.read_bytes()[:-300])

    async def main() -> None:
        pool = ValidationPool()
        try:
            info = await pool.validate(good)
            assert info == validate_ogg_opus(good)
            assert info.duration_s == pytest.approx(2.0, abs=0.03)
            with pytest.raises(InvalidOpusError) as raised:
                await pool.validate(bad)
            with pytest.raises(InvalidOpusError) as local:
                validate_ogg_opus(bad)
            assert str(raised.value) == str(local.value)
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    good = _opus(tmp_path / "good.opus", 1.0)

    async def main() -> None:
        pool = ValidationPool()
        try:
            await pool.validate(good)
            workers = pool.worker_pids()
            assert workers
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            info = await pool.validate(good)
            assert info.duration_s == pytest.approx(1.0, abs=0.03)
        finally:
            await pool.close()

    asyncio.run(main())


def test_many_requests_at_once_each_get_their_own_answer(tmp_path: Path) -> None:
    """Answers come back in the order asked; each reaches its own caller, also when a caller
    went away before its answer (a cancelled request), across two workers."""
    files = [_opus(tmp_path / f"{n}.opus", 0.5 + 0.1 * n) for n in range(8)]
    bad = tmp_path / "bad.opus"
    bad.write_bytes(files[0].read_bytes()[:-200])
    missing = tmp_path / "missing.opus"

    async def main() -> list[object]:
        pool = ValidationPool(processes=2)
        try:
            gone = asyncio.ensure_future(pool.validate(files[1]))
            asked = [asyncio.ensure_future(pool.validate(p)) for p in [*files, bad, missing]]
            await asyncio.sleep(0)
            gone.cancel()
            answers = await asyncio.gather(*asked, return_exceptions=True)
            assert len(pool.worker_pids()) == 2
            return answers
        finally:
            await pool.close()

    answers = asyncio.run(main())
    for path, answer in zip(files, answers[:8], strict=True):
        assert answer == validate_ogg_opus(path)
    assert isinstance(answers[8], InvalidOpusError)
    assert isinstance(answers[9], ValidationFailed)
    assert "FileNotFoundError" in str(answers[9])


_SWITCHES_OF_OTHER_THREADS = """
import asyncio, sys, threading
from pathlib import Path
from codec.validation_pool import ValidationPool

def switches_of_other_threads():
    # Context switches of every thread of this process but this one (/proc): a thread that
    # sleeps throughout makes none.
    me = threading.get_native_id()
    total = 0
    for task in Path("/proc/self/task").iterdir():
        if int(task.name) == me:
            continue
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total

async def main():
    good = Path(sys.argv[1])
    pool = ValidationPool()
    try:
        await pool.validate(good)  # the worker is started
        before = switches_of_other_threads()
        await asyncio.gather(*(pool.validate(good) for _ in range(20)))
        return switches_of_other_threads() - before
    finally:
        await pool.close()

print(asyncio.run(main()))
"""


def test_validation_wakes_no_thread_of_the_server(tmp_path: Path) -> None:
    """The reason for the pool of our own: no thread of the server's process wakes per job
    (concurrent.futures' process pool woke two, each a GIL hand-off with the event loop).
    Counted in a fresh interpreter: this one has the threads other tests left running."""
    good = _opus(tmp_path / "good.opus", 1.0)
    counted = subprocess.run(
        [sys.executable, "-c", _SWITCHES_OF_OTHER_THREADS, str(good)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert int(counted.stdout) == 0


def test_started_workers_take_the_first_requests(tmp_path: Path) -> None:
    """`start` spawns the workers up front; the first requests go to them (none is started
    at the first chunk, which would then wait for its Python and libopus to load)."""
    good = _opus(tmp_path / "good.opus", 0.5)

    async def main() -> tuple[list[int], list[int]]:
        pool = ValidationPool(processes=2)
        try:
            await pool.start()
            started = pool.worker_pids()
            await asyncio.gather(*(pool.validate(good) for _ in range(4)))
            return started, pool.worker_pids()
        finally:
            await pool.close()

    started, after = asyncio.run(main())
    assert len(started) == 2
    assert after == started


def _validation_workers_of(pid: int) -> list[int]:
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return [
        child
        for child in children
        if b"codec.validation_worker" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_a_server_starts_its_validation_worker_before_any_chunk(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", workers=0).start()
    try:
        assert server.process is not None
        assert len(_validation_workers_of(server.process.pid)) == 1
    finally:
        server.stop()


def test_closing_ends_the_workers(tmp_path: Path) -> None:
    good = _opus(tmp_path / "good.opus", 0.5)

    async def main() -> list[int]:
        pool = ValidationPool(processes=2)
        await asyncio.gather(pool.validate(good), pool.validate(good))
        pids = pool.worker_pids()
        await pool.close()
        return pids

    for pid in asyncio.run(main()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_that_never_answers_is_a_clear_failure_not_a_hang(tmp_path: Path) -> None:
    """A worker that ends before answering (here: every one started) is replaced once; a
    second that does too fails the request with a message, instead of hanging or raising
    something internal."""
    good = _opus(tmp_path / "good.opus", 0.5)

    async def main() -> None:
        pool = ValidationPool()
        pool.worker_args = ("-c", "raise SystemExit(3)")
        try:
            with pytest.raises(ValidationFailed, match="two validation workers ended"):
                await asyncio.wait_for(pool.validate(good), 30)
        finally:
            await pool.close()

    asyncio.run(main())
