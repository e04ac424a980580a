"""API keys: bearer tokens that own meetings and uploads.

A key is never stored: requests are matched on its SHA-256, and rows record a short
fingerprint of it as their owner. Another key sees another's meeting as not found (404).
Which keys are in force is `server.key_ring`'s job (the keys file is re-read on change).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from server.api_keys_file import KeyEntry, parse_env_keys, parse_keys, token_digest
from server.errors import ApiError, Errors
from server.key_limit_values import KeyLimits
from server.key_limits import LIMITS

if TYPE_CHECKING:
    from server.key_ring import KeyRing

OWNER = web.RequestKey("owner", str)
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/", "/app/record"}
)
# The docs page's assets; the browser app's pages and assets (they hold no data: every
# call they make carries the key the person typed in).
OPEN_PREFIXES = ("/docs/", "/app/static/", "/app/meetings/")


def fingerprint(key: str) -> str:
    return token_digest(key)[:32]


@dataclass(frozen=True)
class ApiKey:
    digest: str  # SHA-256 of the token
    name: str | None
    limits: KeyLimits  # the server defaults with this key's overrides

    @property
    def owner(self) -> str:
        return self.digest[:32]


@dataclass(frozen=True)
class ApiKeys:
    keys: tuple[ApiKey, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @property
    def owners(self) -> frozenset[str]:
        return frozenset(k.owner for k in self.keys)

    def find(self, token: str) -> ApiKey | None:
        # Every key is compared, each in constant time, and the loop never stops early: how
        # long a refusal takes says nothing about how close a guess came. (What is compared
        # is a hash of the guess, which leaks little anyway; this costs microseconds.)
        candidate = token_digest(token)
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(candidate, key.digest):
                found = key
        return found

    def owner_of(self, token: str) -> str | None:
        key = self.find(token)
        return key.owner if key else None


def api_keys_from(entries: Iterable[KeyEntry], defaults: KeyLimits) -> ApiKeys:
    """The file's keys and the environment's, each with its limits (the first line of a
    key wins, so a key named in the file and the environment keeps the file's limits)."""
    keys: dict[str, ApiKey] = {}
    for entry in entries:
        if entry.digest not in keys:
            keys[entry.digest] = ApiKey(
                entry.digest, entry.name, defaults.with_overrides(entry.limits)
            )
    return ApiKeys(tuple(keys.values()))


def load_api_keys(
    keys_file: str | None, keys_env: str | None, defaults: KeyLimits | None = None
) -> ApiKeys:
    """Keys from a file and/or ROLLSCRIBE_API_KEYS; KeysFileError (a ValueError) or OSError."""
    entries = parse_keys(Path(keys_file).read_text()) if keys_file else []
    return api_keys_from([*entries, *parse_env_keys(keys_env)], defaults or KeyLimits())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_middleware(ring: KeyRing) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not ring.keyed:
            # Loopback without keys: one owner, "", under the server's default limits.
            request[OWNER] = ""
            request[LIMITS] = ring.defaults
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        # Read once: a reload between here and the handler does not mix two key sets.
        key = ring.current.find(token.strip()) if scheme.lower() == "bearer" else None
        request[LIMITS] = key.limits if key else ring.defaults
        if (
            request.method == "OPTIONS"
            or request.path in OPEN_PATHS
            or request.path.startswith(OPEN_PREFIXES)
        ):
            # Open to all, but a key still says whose meetings /metrics may name.
            request[OWNER] = key.owner if key else ""
            return await handler(request)
        if key is None:
            raise ApiError(
                Errors.UNAUTHORIZED,
                "missing or unknown bearer token",
                {"WWW-Authenticate": 'Bearer realm="rollscribe"'},
            )
        request[OWNER] = key.owner
        return await handler(request)

    return middleware
