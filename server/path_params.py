"""A path that names what no database can hold names nothing.

Ids and track names come from the URL's path, percent-decoded. One holding NUL (%00)
cannot be kept in PostgreSQL's text: asking PostgreSQL for it was a fault (500), while
SQLite answered "not found", so the same request was answered two ways. Such a request is
answered here, before any handler, with the 404 it is on either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from server.errors import ApiError, Errors
from storage.field_rules import is_storable_text

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def path_params_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not all(is_storable_text(value) for value in request.match_info.values()):
        raise ApiError(
            Errors.ROUTE_NOT_FOUND,
            f"{request.path!r} holds a NUL, which no id or name does",
        )
    return await handler(request)
