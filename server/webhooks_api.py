"""Webhook subscriptions, their deliveries (dead letters included) and replay."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlparse

from aiohttp import web

from server.auth import OWNER
from server.errors import ApiError, Errors
from server.json_body import read_json_object
from server.key_limits import LIMITS
from server.webhook_targets import TargetPolicy
from storage.database import Database
from storage.field_rules import ascii_int, is_storable_text
from storage.models import Webhook
from storage.outbox import replay
from storage.webhook_subscriptions import DELIVERY_STATUSES, WebhookSubscriptions

EVENT_TYPES = frozenset(
    {
        "chunk.uploaded",
        "chunk.rejected",
        "chunk.transcribed",
        "chunk.failed",
        "track.language_detected",
        "meeting.finalizing",
        "meeting.completed",
        "meeting.failed",
        "meeting.abandoned",
        "meeting.revived",
        "meeting.chunks_missing",
        "meeting.deleted",
    }
)


def _view(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "events": hook.events, "created_at": hook.created_at}


class WebhooksApi:
    def __init__(self, db: Database, targets: TargetPolicy) -> None:
        self.db = db
        self.subscriptions = WebhookSubscriptions(db)
        self.targets = targets

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/webhooks", self.create),
            web.get("/webhooks", self.list),
            web.delete("/webhooks/{webhook_id}", self.delete),
            web.get("/webhooks/{webhook_id}/deliveries", self.deliveries),
            web.post("/webhooks/{webhook_id}/replay", self.replay_all),
            web.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", self.replay_one),
        ]

    async def _hook(self, request: web.Request) -> Webhook:
        return await self.subscriptions.get(request.match_info["webhook_id"], request[OWNER])

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        url, secret, events = body.get("url"), body.get("secret"), body.get("events")
        parsed = urlparse(url) if isinstance(url, str) else None
        if (
            parsed is None
            or parsed.scheme not in ("http", "https")
            or not parsed.netloc
            or not is_storable_text(url)
        ):
            raise ApiError(Errors.INVALID_FIELD, "url must be an http(s) URL")
        if not isinstance(secret, str) or not secret.startswith("whsec_"):
            raise ApiError(Errors.INVALID_FIELD, "secret must be 'whsec_' + base64 of 24-64 bytes")
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ApiError(Errors.INVALID_FIELD, "secret is not base64 after 'whsec_'") from None
        if not 24 <= len(key) <= 64:
            raise ApiError(Errors.INVALID_FIELD, "the secret's key must be 24 to 64 bytes")
        if (
            not isinstance(events, list)
            or not events
            or not all(isinstance(e, str) for e in events)
            or set(events) - EVENT_TYPES
        ):
            raise ApiError(
                Errors.INVALID_FIELD, f"events must be a non-empty list of {sorted(EVENT_TYPES)}"
            )
        # Last: resolving the host is the slow part.
        try:
            host = parsed.hostname
        except ValueError:  # a malformed IPv6 literal
            host = None
        if not host:
            raise ApiError(Errors.INVALID_FIELD, "url must name a host")
        refusal = await self.targets.check_host(host)
        if refusal is not None:
            raise ApiError(Errors.WEBHOOK_TARGET_REFUSED, refusal)
        hook = await self.subscriptions.create(
            request[OWNER], url, secret, events, request[LIMITS].max_webhooks
        )
        return web.json_response(_view(hook), status=201)

    async def list(self, request: web.Request) -> web.Response:
        hooks = await self.subscriptions.of_owner(request[OWNER])
        return web.json_response({"webhooks": [_view(h) for h in hooks]})

    async def delete(self, request: web.Request) -> web.Response:
        hook = await self._hook(request)
        await self.subscriptions.delete(hook.id)
        return web.Response(status=204)

    async def deliveries(self, request: web.Request) -> web.Response:
        hook = await self._hook(request)
        status = request.query.get("status")
        if status is not None and status not in DELIVERY_STATUSES:
            raise ApiError(Errors.INVALID_FIELD, "status must be pending, delivered or dead")
        rows = await self.subscriptions.deliveries(hook.id, status)
        return web.json_response(
            {
                "deliveries": [
                    {
                        "id": d.id,
                        "event_id": d.event_id,
                        "type": kind,
                        "meeting_id": d.meeting_id,
                        "status": d.status,
                        "attempts": d.attempts,
                        "last_status": d.last_status,
                        "last_error": d.last_error,
                        "next_attempt_at": d.next_attempt_at,
                        "delivered_at": d.delivered_at,
                    }
                    for d, kind in rows
                ]
            }
        )

    async def replay_all(self, request: web.Request) -> web.Response:
        hook = await self._hook(request)
        return web.json_response({"replayed": await replay(self.db, hook.id)}, status=202)

    async def replay_one(self, request: web.Request) -> web.Response:
        hook = await self._hook(request)
        raw = request.match_info["delivery_id"]
        delivery_id = ascii_int(raw)
        if delivery_id is None:
            raise ApiError(Errors.INVALID_FIELD, "delivery id must be a non-negative integer")
        count = await replay(self.db, hook.id, delivery_id)
        if count == 0:
            raise ApiError(Errors.NOT_RETRYABLE, "only a dead delivery can be replayed")
        return web.json_response({"replayed": count}, status=202)
