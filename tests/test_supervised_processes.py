"""The supervisor of the server's worker processes and siblings (`transcribe/pool.py`): a
process that keeps exiting right after its start (its database or bucket unreachable, its
schema not its code's) is started again after pauses that double, not every second."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from transcribe.pool import MAX_RESTART_DELAY_S, SupervisedProcesses, restart_delay_s

pytestmark = pytest.mark.storage_free


def test_restart_delays_double_for_quick_exits_and_are_bounded() -> None:
    assert restart_delay_s(1.0, 0) == 1.0  # after a process that ran long enough
    assert [restart_delay_s(1.0, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert restart_delay_s(1.0, 40) == MAX_RESTART_DELAY_S
    assert restart_delay_s(0.2, 3) == pytest.approx(0.8)


def test_a_process_that_exits_at_once_is_restarted_ever_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`python -m` of a module that does not exist exits at once with status 1, like a
    worker whose database is unreachable at its start. With a base delay of 0.2 s, a fixed
    delay would start it about 20 times in 4 s; doubling pauses (0.2, 0.4, 0.8, 1.6 ...)
    start it 5 times."""
    caplog.set_level(logging.WARNING, logger="rollscribe.pool")

    async def supervise_for(seconds: float) -> None:
        supervised = SupervisedProcesses(
            1, [], module="rollscribe_no_such_module", what="test process", restart_delay_s=0.2
        )
        await supervised.start()
        await asyncio.sleep(seconds)
        await supervised.stop()

    started = time.monotonic()
    asyncio.run(supervise_for(4.0))
    assert time.monotonic() - started < 10  # stop() ends a pause in progress
    exits = [m for m in caplog.messages if "test process" in m and "exited with 1" in m]
    assert 3 <= len(exits) <= 6, exits
    assert any(f"restarting in {d} s" in exits[-1] for d in ("0.8", "1.6", "3.2")), exits
