"""Reads a request's JSON object body, within a time limit (a client sending a small body a
byte a second would otherwise hold its request open for hours)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from server.errors import ApiError, Errors

# Set by the app from --read-timeout-seconds.
BODY_TIMEOUT_S = web.AppKey("body_timeout_s", float)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    limit = request.app.get(BODY_TIMEOUT_S, 30.0)
    try:
        async with asyncio.timeout(limit):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(Errors.READ_TIMEOUT, f"the body took longer than {limit:g} s") from None
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(Errors.INVALID_JSON, str(exc)[:200]) from None
    except RecursionError:  # the parser recurses once per nesting level
        raise ApiError(Errors.INVALID_JSON, "the JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(Errors.INVALID_JSON, f"got a JSON {type(body).__name__}")
    return body
