"""The webhook routes: subscriptions, deliveries, replays."""

from __future__ import annotations

from server.api_description.parts import (
    BODY_TOO_LARGE,
    BODY_TOO_SLOW,
    HOST_REFUSED,
    PATH_NAMES_NOTHING,
    Json,
    error_answer,
    json_body,
    json_content,
    operation,
    path_param,
    ref,
)

WEBHOOK_ID = path_param("webhook_id", "The webhook's id (`wh_...`).")
WEBHOOK_NOT_FOUND = error_answer(
    "ERR_WEBHOOK_NOT_FOUND: no such webhook (or another key's)." + PATH_NAMES_NOTHING
)


def webhook_paths() -> Json:
    replayed = {
        "description": "Dead deliveries queued again.",
        "content": json_content(ref("schemas", "Replayed")),
    }
    return {
        "/webhooks": {
            "post": operation(
                "createWebhook",
                "Subscribe a URL to events (signed with the secret, Standard Webhooks)",
                {
                    "201": {
                        "description": "Created.",
                        "content": json_content(ref("schemas", "Webhook")),
                    },
                    "400": error_answer(
                        "ERR_INVALID_JSON, ERR_INVALID_FIELD or ERR_WEBHOOK_TARGET_REFUSED (a "
                        "private, loopback or link-local address not in --webhook-allow-networks)."
                    ),
                    "403": error_answer(
                        f"{HOST_REFUSED} Or ERR_WEBHOOKS_LIMIT: the key has as many webhooks as "
                        "--max-webhooks-per-key allows."
                    ),
                    "408": BODY_TOO_SLOW,
                    "413": BODY_TOO_LARGE,
                },
                tags=["webhooks"],
                body=json_body("WebhookCreate", required=True),
            ),
            "get": operation(
                "listWebhooks",
                "The caller's webhooks",
                {
                    "200": {
                        "description": "Oldest first.",
                        "content": json_content(ref("schemas", "WebhookList")),
                    }
                },
                tags=["webhooks"],
            ),
        },
        "/webhooks/{webhook_id}": {
            "parameters": [WEBHOOK_ID],
            "delete": operation(
                "deleteWebhook",
                "Unsubscribe (its deliveries go too)",
                {"204": {"description": "Deleted."}, "404": WEBHOOK_NOT_FOUND},
                tags=["webhooks"],
            ),
        },
        "/webhooks/{webhook_id}/deliveries": {
            "parameters": [WEBHOOK_ID],
            "get": operation(
                "listDeliveries",
                "The webhook's deliveries (dead letters included), at most 1000",
                {
                    "200": {
                        "description": "Oldest event first.",
                        "content": json_content(ref("schemas", "DeliveryList")),
                    },
                    "400": error_answer(
                        "ERR_INVALID_FIELD: status is not pending, delivered or dead."
                    ),
                    "404": WEBHOOK_NOT_FOUND,
                },
                tags=["webhooks"],
                parameters=[
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["pending", "delivered", "dead"]},
                    }
                ],
            ),
        },
        "/webhooks/{webhook_id}/replay": {
            "parameters": [WEBHOOK_ID],
            "post": operation(
                "replayDeliveries",
                "Queue every dead delivery of the webhook again",
                {"202": replayed, "404": WEBHOOK_NOT_FOUND},
                tags=["webhooks"],
            ),
        },
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay": {
            "parameters": [
                WEBHOOK_ID,
                path_param(
                    "delivery_id",
                    "The delivery's id (ASCII digits).",
                    {"type": "string", "pattern": "^[0-9]{1,10}$"},
                ),
            ],
            "post": operation(
                "replayDelivery",
                "Queue one dead delivery again",
                {
                    "202": replayed,
                    "400": error_answer("ERR_INVALID_FIELD: the delivery id is not an integer."),
                    "404": WEBHOOK_NOT_FOUND,
                    "409": error_answer("ERR_NOT_RETRYABLE: only a dead delivery can be replayed."),
                },
                tags=["webhooks"],
            ),
        },
    }
