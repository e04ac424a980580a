"""The Host header of a server without API keys must name this server.

Without keys, anything that reaches the port is trusted, which is why such a server only
listens on loopback. A web page can still get there by DNS rebinding: its own name is made
to resolve to 127.0.0.1, so the browser treats the server as the page's own origin and
sends `Host: evil.example`. Refusing Host names that are not this server's closes that.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

from server.errors import ApiError, Errors

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(host_header: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:8080' -> '::1', 'Example.com.' -> 'example.com'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def allowed_names(bound_host: str, public_url: str | None) -> frozenset[str]:
    names = {"localhost", host_name(bound_host)}
    if public_url:
        names.add(host_name(urlsplit(public_url).netloc or public_url))
    return frozenset(names)


def is_loopback_name(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_check_middleware(names: Iterable[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    allowed = frozenset(names)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = host_name(request.headers.get("Host", ""))
        if name not in allowed and not is_loopback_name(name):
            raise ApiError(
                Errors.HOST_NOT_ALLOWED,
                f"Host {name[:100]!r}: without API keys this server answers only to "
                "loopback names and the host of --public-url",
            )
        return await handler(request)

    return middleware
