"""Where webhooks may be delivered: only to addresses on the public internet, unless an
operator allows more networks (--webhook-allow-networks).

A webhook URL is chosen by whoever holds an API key. Without this check, a key holder
could make the server POST to its own loopback services, the private network around it or
a cloud metadata endpoint. The address is checked when the webhook is registered (a clear
400) and again on every connection (`GuardedResolver`): a name that resolved to a public
address at registration and to 127.0.0.1 later (DNS rebinding) is refused then.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetRefused(OSError):
    """Raised where a connection would be made: aiohttp reports it as a connection error."""


def parse_networks(spec: str | Iterable[str]) -> tuple[IpNetwork, ...]:
    """'127.0.0.0/8, 10.1.2.3' -> networks; ValueError names the bad entry."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not a network (CIDR) or address: {item!r}") from None
    return tuple(networks)


@dataclass(frozen=True)
class TargetPolicy:
    allowed: tuple[IpNetwork, ...] = field(default_factory=tuple)

    def refusal(self, address: str) -> str | None:
        """Why a connection to `address` is refused, or None when it is allowed."""
        try:
            ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address!r} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in network for network in self.allowed):
            return None
        # is_global is False for loopback, private (RFC 1918, fc00::/7), link-local (and so
        # the 169.254.169.254 metadata address), shared (100.64/10), reserved and
        # documentation ranges; multicast is refused on its own.
        if not ip.is_global or ip.is_multicast or ip.is_unspecified:
            return (
                f"{ip} is not a public address (loopback, private, link-local, multicast or "
                "reserved); an operator can allow it with --webhook-allow-networks"
            )
        return None

    async def check_host(self, host: str) -> str | None:
        """At registration: the refusal for a URL's host (an address, or a name and every
        address it resolves to), or None. Names are resolved with the system resolver."""
        literal = literal_host(host)
        if literal is not None:
            return self.refusal(literal)
        try:
            infos = await ThreadedResolver().resolve(host, 0, socket.AF_UNSPEC)
        except OSError as exc:
            return f"{host!r} does not resolve: {exc}"
        for info in infos:
            reason = self.refusal(info["host"])
            if reason is not None:
                return f"{host!r} resolves to {reason}"
        return None


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing addresses the policy refuses at connect time. aiohttp
    does not call a resolver for a URL whose host is an IP address: the dispatcher checks
    those itself (`TargetPolicy.refusal`) before it connects."""

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy
        self.inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self.inner.resolve(host, port, family)
        allowed = [i for i in infos if self.policy.refusal(i["host"]) is None]
        if not allowed:
            raise TargetRefused(f"{host}: {self.policy.refusal(infos[0]['host'])}")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def literal_host(url_host: str | None) -> str | None:
    """The host if it is an IP address literal, else None."""
    if not url_host:
        return None
    try:
        ipaddress.ip_address(url_host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    return url_host.strip("[]")
