"""Webhook subscriptions of a key, and the deliveries made to each (dead letters included).
Delivering and replaying them is `storage/outbox.py`'s."""

from __future__ import annotations

import secrets
import time

from sqlalchemy import delete, func, select

from storage import key_usage
from storage.database import Database
from storage.models import Delivery, Event, Webhook
from storage.refusals import Refused, Rule

DELIVERY_STATUSES = ("pending", "delivered", "dead")
MAX_LISTED_DELIVERIES = 1000


class WebhookSubscriptions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, owner: str, url: str, secret: str, events: list[str], max_webhooks: int
    ) -> Webhook:
        """Subscribed to events from now on: a new subscriber is not flooded with history.
        Refused past `max_webhooks` (0: no limit), counted in the inserting transaction."""
        async with self.db.write() as session:
            if max_webhooks and await key_usage.webhooks(session, owner) >= max_webhooks:
                raise Refused(
                    Rule.WEBHOOKS_LIMIT, f"max_webhooks is {max_webhooks}; delete a webhook first"
                )
            cursor = (await session.execute(select(func.max(Event.id)))).scalar_one() or 0
            hook = Webhook(
                id="wh_" + secrets.token_urlsafe(12),
                owner=owner,
                url=url,
                secret=secret,
                events=sorted(set(events)),
                cursor=cursor,
                created_at=time.time(),
            )
            session.add(hook)
        return hook

    async def get(self, webhook_id: str, owner: str) -> Webhook:
        async with self.db.read() as session:
            hook = await session.get(Webhook, webhook_id)
        # Another key's webhook is not found: its existence stays private.
        if hook is None or hook.owner != owner:
            raise Refused(Rule.WEBHOOK_NOT_FOUND, webhook_id)
        return hook

    async def of_owner(self, owner: str) -> list[Webhook]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(Webhook).where(Webhook.owner == owner).order_by(Webhook.created_at)
            )
            return list(rows.scalars().all())

    async def delete(self, webhook_id: str) -> None:
        async with self.db.write() as session:
            await session.execute(delete(Delivery).where(Delivery.webhook_id == webhook_id))
            await session.execute(delete(Webhook).where(Webhook.id == webhook_id))

    async def deliveries(self, webhook_id: str, status: str | None) -> list[tuple[Delivery, str]]:
        """The webhook's deliveries in event order (the first 1,000), each with its event's
        type; only those in `status` if given."""
        query = (
            select(Delivery, Event.type)
            .join(Event, Event.id == Delivery.event_id)
            .where(Delivery.webhook_id == webhook_id)
        )
        if status is not None:
            query = query.where(Delivery.status == status)
        async with self.db.read() as session:
            rows = await session.execute(
                query.order_by(Delivery.event_id).limit(MAX_LISTED_DELIVERIES)
            )
            return [(delivery, kind) for delivery, kind in rows.all()]
