"""Ogg Opus validation in a worker process (codec/validation_pool.py): the same verdicts as
in-process validation, errors carried back, and a dead worker replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from codec.errors import InvalidOpusError
from codec.segmenter import OggOpusFileWriter
from codec.validate import validate_ogg_opus
from codec.validation_pool import ValidationPool


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
            pool.close()

    asyncio.run(main())


def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    good = _opus(tmp_path / "good.opus", 1.0)

    async def main() -> None:
        pool = ValidationPool()
        try:
            await pool.validate(good)
            workers = list(pool._executor()._processes)  # noqa: SLF001 - the test kills one
            assert workers
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            info = await pool.validate(good)
            assert info.duration_s == pytest.approx(1.0, abs=0.03)
        finally:
            pool.close()

    asyncio.run(main())
