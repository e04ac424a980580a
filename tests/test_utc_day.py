"""The UTC day a key's uploaded bytes are counted under (storage/commit_time_writes.utc_day),
cached per day number: the same string as formatting the instant itself, at every edge."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from storage.commit_time_writes import utc_day

MIDNIGHT = 1_796_515_200.0  # 2026-12-06T00:00:00Z


def _formatted(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    "now",
    [MIDNIGHT - 1e-6, MIDNIGHT, MIDNIGHT + 86_399.999, 0.0, -0.5, -86_400.0, 951_782_400.0],
)
def test_the_day_changes_at_utc_midnight(now: float) -> None:
    assert utc_day(now) == _formatted(now)


def test_any_instant_is_the_day_formatting_it_gives() -> None:
    draw = random.Random(7)
    for _ in range(20_000):
        now = draw.uniform(-2e9, 5e9)
        assert utc_day(now) == _formatted(now), now
