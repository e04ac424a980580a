"""The webhook outbox. Events are written with the state change that causes them (same
transaction, `state_machine.record_event`); here they fan out into one delivery row per
subscribed webhook and are handed to the dispatcher in order per meeting.

A delivery is claimed with a short lease, so several server nodes may run dispatchers.
A dead (given up) delivery does not hold back later ones of its meeting; replay resends it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import aliased

from storage.database import Database
from storage.models import Delivery, Event, Meeting, Webhook
from storage.prepared_statements import PreparedStatement

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
FANOUT_BATCH = 500
LEASE_S = 60.0


@dataclass(frozen=True)
class DueDelivery:
    delivery_id: int
    webhook_id: str
    url: str
    secret: str
    event_id: int
    event_type: str
    meeting_id: str
    payload: dict[str, Any]
    created_at: float  # when the event happened
    attempts: int
    first_queued_at: float


async def any_webhook(db: Database) -> bool:
    """Whether there is anything to fan out to or deliver (deleting a webhook deletes its
    deliveries). The dispatcher wakes at every commit that logs events: without a webhook
    this one point read is all that wake costs, not two write transactions (they were 4 %
    of the server's CPU under many small uploads on PostgreSQL)."""
    return await db.read_first(_ANY_WEBHOOK) is not None


_ANY_WEBHOOK = PreparedStatement(select(Webhook.__table__.c.id).limit(1))


async def fan_out(db: Database) -> int:
    """New events become pending deliveries for every webhook that wants them."""
    created = 0
    async with db.write() as session:
        hooks = (await session.execute(select(Webhook))).scalars().all()
        for hook in hooks:
            events = (
                await session.execute(
                    select(Event, Meeting.owner)
                    .join(Meeting, Meeting.id == Event.meeting_id)
                    .where(Event.id > hook.cursor)
                    .order_by(Event.id)
                    .limit(FANOUT_BATCH)
                )
            ).all()
            now = time.time()
            for event, owner in events:
                if event.type in hook.events and owner == hook.owner:
                    session.add(
                        Delivery(
                            webhook_id=hook.id,
                            event_id=event.id,
                            meeting_id=event.meeting_id,
                            status=PENDING,
                            attempts=0,
                            next_attempt_at=0.0,
                            lease_until=0.0,
                            created_at=now,
                        )
                    )
                    created += 1
            if events:
                hook.cursor = events[-1][0].id
    return created


async def claim_due(db: Database, limit: int, now: float | None = None) -> list[DueDelivery]:
    """The first pending delivery of each (webhook, meeting), if due and not leased."""
    now = time.time() if now is None else now
    earlier = aliased(Delivery)
    async with db.write() as session:
        rows = (
            await session.execute(
                select(Delivery, Webhook, Event)
                .join(Webhook, Webhook.id == Delivery.webhook_id)
                .join(Event, Event.id == Delivery.event_id)
                .where(
                    Delivery.status == PENDING,
                    Delivery.next_attempt_at <= now,
                    Delivery.lease_until < now,
                    ~select(earlier.id)
                    .where(
                        and_(
                            earlier.webhook_id == Delivery.webhook_id,
                            earlier.meeting_id == Delivery.meeting_id,
                            earlier.status == PENDING,
                            earlier.event_id < Delivery.event_id,
                        )
                    )
                    .exists(),
                )
                .order_by(Delivery.event_id)
                .limit(limit)
            )
        ).all()
        due = []
        for delivery, hook, event in rows:
            result = await session.execute(
                update(Delivery)
                .where(Delivery.id == delivery.id, Delivery.lease_until < now)
                .values(lease_until=now + LEASE_S)
            )
            if result.rowcount == 1:
                due.append(
                    DueDelivery(
                        delivery.id,
                        hook.id,
                        hook.url,
                        hook.secret,
                        event.id,
                        event.type,
                        event.meeting_id,
                        event.payload,
                        event.created_at,
                        delivery.attempts,
                        delivery.created_at,
                    )
                )
        return due


async def record_outcome(
    db: Database,
    delivery_id: int,
    *,
    delivered: bool,
    dead: bool,
    next_attempt_at: float,
    status_code: int | None,
    error: str | None,
) -> None:
    values: dict[str, Any] = {
        "attempts": Delivery.attempts + 1,
        "lease_until": 0.0,
        "last_status": status_code,
        "last_error": error,
    }
    if delivered:
        values.update(status=DELIVERED, delivered_at=time.time())
    elif dead:
        values.update(status=DEAD)
    else:
        values.update(next_attempt_at=next_attempt_at)
    async with db.write() as session:
        await session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))


async def replay(db: Database, webhook_id: str, delivery_id: int | None = None) -> int:
    """Dead deliveries go back to pending, to be sent again (same idempotency id)."""
    conditions = [Delivery.webhook_id == webhook_id, Delivery.status == DEAD]
    if delivery_id is not None:
        conditions.append(Delivery.id == delivery_id)
    async with db.write() as session:
        result = await session.execute(
            update(Delivery)
            .where(*conditions)
            .values(
                status=PENDING,
                attempts=0,
                next_attempt_at=0.0,
                lease_until=0.0,
                created_at=time.time(),
            )
        )
        return result.rowcount


@dataclass(frozen=True)
class OutboxStats:
    by_status: dict[str, int]
    oldest_undelivered_age_s: float


async def outbox_stats(db: Database, now: float) -> OutboxStats:
    async with db.read() as session:
        by_status = dict(
            (
                await session.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                )
            ).all()
        )
        oldest = (
            await session.execute(
                select(func.min(Event.created_at))
                .join(Delivery, Delivery.event_id == Event.id)
                .where(Delivery.status == PENDING)
            )
        ).scalar_one_or_none()
    return OutboxStats(by_status, 0.0 if oldest is None else now - oldest)
