"""The webhook dispatcher, woken by every commit that logs events, looks at the outbox no
more often than `DeliveryPolicy.min_gap_s`: under many small uploads a commit lands every
few milliseconds, and each look was a read per upload (a round trip on PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from server.webhook_dispatcher import DeliveryPolicy, WebhookDispatcher
from server.webhook_targets import TargetPolicy
from tests.upload_store_setup import fresh_database


async def _looks_while_commits_never_stop(tmp_path: Path, policy: DeliveryPolicy) -> int:
    """How often the dispatcher looked in 0.6 s while a commit was always waiting."""
    db = await fresh_database(tmp_path)
    looks = 0

    async def a_commit_is_always_there(_timeout_s: float) -> None:
        nonlocal looks
        looks += 1  # the dispatcher waits once after each look that found nothing to send
        await asyncio.sleep(0)  # as a wait does, it lets the loop run

    dispatcher = WebhookDispatcher(db, policy, TargetPolicy(), a_commit_is_always_there)
    dispatcher.start()
    await asyncio.sleep(0.6)
    await dispatcher.stop()
    await db.close()
    return looks


def test_commits_in_a_stream_wake_the_dispatcher_at_most_every_min_gap(tmp_path: Path) -> None:
    started = time.monotonic()
    looks = asyncio.run(_looks_while_commits_never_stop(tmp_path, DeliveryPolicy(min_gap_s=0.1)))
    elapsed = time.monotonic() - started
    # Every 0.1 s within the 0.6 s: it still looks again at once after a gap (a commit was
    # there), and never more often (without the gap: one look per loop turn, thousands).
    assert 3 <= looks <= 7, (looks, elapsed)


def test_without_a_gap_it_looks_at_every_commit(tmp_path: Path) -> None:
    # The same dispatcher with the gap off: what the gap saves (and that this test's
    # stand-in for commits does wake it each time).
    looks = asyncio.run(_looks_while_commits_never_stop(tmp_path, DeliveryPolicy(min_gap_s=0.0)))
    assert looks > 50, looks
