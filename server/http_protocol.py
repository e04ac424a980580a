"""The HTTP connection layer under the app: how long a client may take to send a request's
head, and the JSON body on requests aiohttp's parser refuses.

aiohttp answers a request it cannot parse (a header line over 8190 bytes, a malformed
request line, too many headers) itself, in plain text, before any middleware runs, and offers
no hook for it; its connection handler's `handle_error` is the one place such answers are
made, so a subclass renders them as the same JSON error body as every other error.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from server.errors import FRAMEWORK_ERRORS, ErrorKind


class JsonErrorsRequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs, checks, closes
        kind = FRAMEWORK_ERRORS.get(status) or ErrorKind(
            f"ERR_HTTP_{status}", status, HTTPStatus(status).phrase
        )
        detail = str(exc) if exc is not None and status != 500 else kind.message
        body = json.dumps({"error": {"code": kind.code, "message": detail[:500]}})
        response = web.Response(status=plain.status, text=body, content_type="application/json")
        response.force_close()
        return response


class _JsonErrorsServer(web.Server):
    def __init__(self, made: web.Server, protocol_kwargs: dict[str, Any]) -> None:
        super().__init__(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **protocol_kwargs,
        )
        self._protocol_kwargs = protocol_kwargs

    def __call__(self) -> RequestHandler:
        return JsonErrorsRequestHandler(
            self, loop=asyncio.get_running_loop(), **self._protocol_kwargs
        )


class AppRunner(web.AppRunner):
    """aiohttp's runner with JSON parse errors and a limit on the time to a request's head.

    `header_timeout_s`: a connection is closed when it has not sent a whole request head
    this long after it opened or after its last response (aiohttp's keep-alive timer, which
    runs while a head is arriving): a client sending its headers a byte at a time cannot hold
    a connection for longer.
    """

    __slots__ = ("_protocol_kwargs",)

    def __init__(self, app: web.Application, header_timeout_s: float) -> None:
        self._protocol_kwargs: dict[str, Any] = {
            "access_log": None,
            "keepalive_timeout": header_timeout_s,
        }
        super().__init__(app, **self._protocol_kwargs)

    async def _make_server(self) -> web.Server:
        return _JsonErrorsServer(await super()._make_server(), self._protocol_kwargs)
