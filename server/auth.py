"""API keys: bearer tokens that own meetings and uploads.

A key is never stored: requests are matched on its SHA-256, and rows record a short
fingerprint of it as their owner. Another key sees another's meeting as not found (404).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from server.errors import ApiError, Errors

OWNER = web.RequestKey("owner", str)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"})
OPEN_PREFIXES = ("/docs/",)  # the docs page's assets


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ApiKeys:
    fingerprints: frozenset[str] = field(default_factory=frozenset)

    @property
    def enabled(self) -> bool:
        return bool(self.fingerprints)

    def owner_of(self, token: str) -> str | None:
        candidate = fingerprint(token)
        for known in self.fingerprints:
            if hmac.compare_digest(candidate, known):
                return known
        return None


def load_api_keys(keys_file: str | None, keys_env: str | None) -> ApiKeys:
    """Keys from a file (one per line, '#' comments) and/or a comma-separated variable."""
    keys: list[str] = []
    if keys_file:
        for line in Path(keys_file).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(line)
    if keys_env:
        keys += [k.strip() for k in keys_env.split(",") if k.strip()]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ValueError("API keys must be at least 16 characters long")
    return ApiKeys(frozenset(fingerprint(k) for k in keys))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_middleware(keys: ApiKeys) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not keys.enabled:
            request[OWNER] = ""
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        owner = keys.owner_of(token.strip()) if scheme.lower() == "bearer" else None
        if (
            request.method == "OPTIONS"
            or request.path in OPEN_PATHS
            or request.path.startswith(OPEN_PREFIXES)
        ):
            # Open to all, but a key still says whose meetings /metrics may name.
            request[OWNER] = owner or ""
            return await handler(request)
        if owner is None:
            raise ApiError(
                Errors.UNAUTHORIZED,
                "missing or unknown bearer token",
                {"WWW-Authenticate": 'Bearer realm="rollscribe"'},
            )
        request[OWNER] = owner
        return await handler(request)

    return middleware
