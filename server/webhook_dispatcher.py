"""Delivers outbox rows to webhooks: at least once, in order per meeting, signed in the
Standard Webhooks format, retried with exponential backoff and jitter over a horizon.

4xx other than 408/429 is permanent (dead letter); 5xx, 408, 429, timeouts and refused
connections are retried; Retry-After is honoured. Everything lives in the database, so a
restart resumes where delivery stopped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
from yarl import URL

from server.webhook_targets import GuardedResolver, TargetPolicy, TargetRefused, literal_host
from storage.database import Database
from storage.database_outage import database_unavailable
from storage.field_rules import ascii_int
from storage.outbox import DueDelivery, any_webhook, claim_due, fan_out, record_outcome

log = logging.getLogger("rollscribe.webhooks")

RETRYABLE_4XX = (408, 429)


@dataclass(frozen=True)
class DeliveryPolicy:
    backoff_base_s: float = 5.0
    backoff_max_s: float = 3600.0
    horizon_s: float = 3 * 24 * 3600.0  # keep retrying a downstream outage this long
    timeout_s: float = 10.0
    # Idle, the dispatcher waits this long for a commit that logged events (this process's,
    # or any on PostgreSQL) before it looks again (events of other processes on SQLite,
    # retries falling due).
    poll_s: float = 1.0
    # Woken by commits, it looks no more often than this: under many small uploads a commit
    # that logs events lands every few milliseconds, and each look is a read (a round trip
    # on PostgreSQL, a thread hop on SQLite), one per upload; a delivery waits at most this
    # much longer for it.
    min_gap_s: float = 0.1
    concurrency: int = 16

    def delay(self, attempts: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, attempts - 1))
        return ceiling * random.uniform(0.5, 1.0)  # jitter: retries of many don't align


def message_id(event_id: int) -> str:
    """Stable for an event: the idempotency key across retries and replays."""
    return f"msg_{event_id}"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    seconds = ascii_int(value, maximum=10**9)
    if seconds is not None:
        return float(seconds)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def body_of(due: DueDelivery) -> bytes:
    return json.dumps(
        {
            "id": message_id(due.event_id),
            "type": due.event_type,
            "timestamp": datetime.fromtimestamp(due.created_at, UTC).isoformat(),
            "data": {"meeting_id": due.meeting_id, **due.payload},
        }
    ).encode()


class WebhookDispatcher:
    def __init__(
        self,
        db: Database,
        policy: DeliveryPolicy,
        targets: TargetPolicy,
        wait_for_events: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.policy = policy
        self.targets = targets
        self.wait_for_events = wait_for_events or asyncio.sleep
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _send(self, due: DueDelivery) -> None:
        assert self._session is not None
        msg_id = message_id(due.event_id)
        timestamp = int(time.time())
        body = body_of(due)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(due.secret, msg_id, timestamp, body),
        }
        status: int | None = None
        wait: float | None = None
        try:
            # aiohttp resolves names through the GuardedResolver, but connects to an IP
            # address in the URL without asking any resolver: that one is checked here.
            literal = literal_host(URL(due.url).host)
            refusal = self.targets.refusal(literal) if literal else None
            if refusal is not None:
                raise TargetRefused(refusal)
            async with self._session.post(
                due.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                wait = retry_after_s(response.headers.get("Retry-After"))
                error = None if status < 300 else f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, TargetRefused) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        delivered = status is not None and 200 <= status < 300
        permanent = status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX
        attempts = due.attempts + 1
        expired = time.time() - due.first_queued_at > self.policy.horizon_s
        delay = max(self.policy.delay(attempts), wait or 0.0)
        await record_outcome(
            self.db,
            due.delivery_id,
            delivered=delivered,
            dead=not delivered and (permanent or expired),
            next_attempt_at=time.time() + delay,
            status_code=status,
            error=error,
        )

    async def run_once(self) -> int:
        if not await any_webhook(self.db):
            return 0
        await fan_out(self.db)
        due = await claim_due(self.db, self.policy.concurrency)
        await asyncio.gather(*(self._send(d) for d in due))
        return len(due)

    async def _loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s)
        # Every connection's addresses are checked as they are resolved (DNS rebinding).
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.targets))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            while True:
                try:
                    looked_at = time.monotonic()
                    if await self.run_once() == 0:
                        await self.wait_for_events(self.policy.poll_s)
                        too_soon = self.policy.min_gap_s - (time.monotonic() - looked_at)
                        if too_soon > 0:
                            await asyncio.sleep(too_soon)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not database_unavailable(exc):
                        log.exception("webhook dispatch failed; trying again")
                    else:  # an outage is not a fault: one line a second, no traceback
                        log.warning("webhook dispatch: the database is unavailable (%s)", exc)
                    await asyncio.sleep(1.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
