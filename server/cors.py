"""CORS for browser clients (tus-js-client, Uppy, pages on other origins): only for the
origins an operator names with --cors-origins. Without it, no origin is approved, so a web
page the user happens to visit cannot read this server's answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

ALLOW_HEADERS = (
    "Authorization, Content-Type, Origin, X-Requested-With, X-Request-ID, "
    "X-HTTP-Method-Override, Last-Event-ID, Tus-Resumable, Upload-Length, Upload-Offset, "
    "Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Checksum"
)
EXPOSE_HEADERS = (
    "Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Defer-Length, "
    "Upload-Concat, Upload-Expires, Tus-Version, Tus-Resumable, Tus-Max-Size, "
    "Tus-Extension, Tus-Checksum-Algorithm, Retry-After"
)
ALLOW_METHODS = "POST, HEAD, PATCH, OPTIONS, GET, DELETE"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def cors_middleware(origins: Iterable[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    allowed = frozenset(origins)

    def approved(origin: str | None) -> bool:
        return origin is not None and ("*" in allowed or origin.rstrip("/") in allowed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not approved(origin):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = "86400"
        else:
            response = await handler(request)
        if not response.prepared:
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            response.headers["Vary"] = "Origin"
        return response

    return middleware
