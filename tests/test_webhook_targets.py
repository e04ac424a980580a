"""Webhooks cannot reach inside: loopback, private, link-local, metadata and the like are
refused at registration and at connect time, unless an operator allows a network. Every
address here is either loopback or never connected to (refused before any connection)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from server.webhook_targets import (
    GuardedResolver,
    TargetPolicy,
    TargetRefused,
    literal_host,
    parse_networks,
)
from tests.conftest import PROTOCOL_ARGS, create_meeting
from tests.in_process_server import InProcessServer
from tests.server_process import ServerProcess
from tests.test_webhooks import FAST_RETRY, SECRET, Receiver

REFUSED = [
    "127.0.0.1",
    "127.1.2.3",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "0.0.0.0",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (carrier NAT)
    "169.254.169.254",  # cloud metadata
    "fe80::1",
    "fd00::1",  # unique local
    "::ffff:10.0.0.1",
    "224.0.0.1",
    "ff02::1",
    "192.0.2.1",  # documentation
]


@pytest.mark.parametrize("address", REFUSED)
def test_inside_addresses_are_refused(address):
    assert TargetPolicy().refusal(address) is not None


def test_public_addresses_and_allowed_networks_pass():
    # Only judged here, never connected to.
    assert TargetPolicy().refusal("8.8.8.8") is None
    assert TargetPolicy().refusal("2001:4860:4860::8888") is None
    allowed = TargetPolicy(parse_networks("127.0.0.0/8, fd00::/8"))
    assert allowed.refusal("127.0.0.1") is None
    assert allowed.refusal("::ffff:127.0.0.1") is None
    assert allowed.refusal("fd00::1") is None
    assert allowed.refusal("10.0.0.1") is not None
    with pytest.raises(ValueError, match="not-a-cidr"):
        parse_networks("127.0.0.0/8,not-a-cidr")


def test_the_resolver_refuses_at_connect_time():
    async def run() -> None:
        with pytest.raises(TargetRefused):
            await GuardedResolver(TargetPolicy()).resolve("localhost", 80)
        allowed = GuardedResolver(TargetPolicy(parse_networks("127.0.0.0/8,::1/128")))
        assert {r["host"] for r in await allowed.resolve("localhost", 80)} <= {
            "127.0.0.1",
            "::1",
        }

    asyncio.run(run())


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Any connect() in this process (the test's client and the in-process server alike)
    to an address that is not loopback fails before a packet is sent, and is recorded."""
    attempts: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def checked(address: object) -> None:
        if isinstance(address, tuple):
            host = str(address[0]).split("%")[0]
            if not ipaddress.ip_address(host).is_loopback:
                attempts.append(address)
                raise ConnectionRefusedError(f"test guard: {address} is not loopback")

    def connect(self: socket.socket, address: object) -> None:
        checked(address)
        real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        checked(address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[InProcessServer]:
    """The app in this process on asyncio's own loop: the guard above patches Python's
    socket calls, and uvloop (the server's default loop) connects from C, past them."""
    server = InProcessServer(
        tmp_path / "data", extra=[*PROTOCOL_ARGS, "--event-loop", "asyncio"]
    ).start()
    assert type(server.loop).__module__.startswith("asyncio")
    yield server
    server.stop()


def test_registration_refuses_every_spelling_of_inside(guarded_server, loopback_only):
    # The app runs in this process, under the guard: nothing can connect outside loopback.
    base = guarded_server.url  # default: nothing but public addresses
    # Refused from the address alone, before any lookup or connection: nothing is sent.
    urls = [
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://[::1]:9/x",
        "http://[::ffff:127.0.0.1]:9/x",
        "http://127.1:9/x",
        "http://2130706433:9/x",  # 127.0.0.1 as one number
        "http://0x7f000001:9/x",
        "http://0177.0.0.1:9/x",  # octal
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/x",
    ]
    # The addresses that are not loopback must be refused from the address alone (no
    # lookup, no connection) before any of them is offered to the server: should the
    # policy ever accept one, the test stops here and nothing is registered to reach it.
    policy = TargetPolicy()
    for url in urls[-3:]:
        literal = literal_host(urlparse(url).hostname)
        assert literal is not None and policy.refusal(literal) is not None, url
    for url in urls:
        r = requests.post(
            base + "/webhooks",
            json={"url": url, "secret": SECRET, "events": ["meeting.finalizing"]},
            timeout=10,
        )
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"]["code"] == "ERR_WEBHOOK_TARGET_REFUSED", url
    assert requests.get(base + "/webhooks", timeout=10).json()["webhooks"] == []
    assert loopback_only == []  # nothing tried to connect outside loopback


def _finalize_a_meeting(base: str) -> str:
    meeting_id = create_meeting(base, tracks=["mic"])["id"]
    r = requests.post(
        f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": {"mic": 0}}, timeout=10
    )
    assert r.status_code == 200, r.text
    return meeting_id


def _deliveries(base: str, hook: str) -> list[dict]:
    return requests.get(f"{base}/webhooks/{hook}/deliveries", timeout=10).json()["deliveries"]


def test_a_redirect_is_not_followed(tmp_path):
    # Webhooks may reach 127.0.0.1 only; the receiver there redirects to 127.0.0.2.
    inside = Receiver(host="127.0.0.2")
    inside.start()
    redirecting = Receiver()
    redirecting.redirect_to = inside.url
    redirecting.start()
    server = ServerProcess(tmp_path / "data", workers=0, extra=FAST_RETRY).start()
    try:
        base = server.url
        r = requests.post(
            base + "/webhooks",
            json={"url": redirecting.url, "secret": SECRET, "events": ["meeting.finalizing"]},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        hook = r.json()["id"]
        _finalize_a_meeting(base)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(redirecting.requests) < 2:
            time.sleep(0.1)
        assert len(redirecting.requests) >= 2  # asked, answered 302, asked again later
        assert inside.requests == []  # never followed
        assert _deliveries(base, hook)[0]["last_status"] == 302
    finally:
        server.stop()
        redirecting.stop()
        inside.stop()


def test_a_target_refused_later_is_refused_at_delivery(tmp_path):
    receiver = Receiver()
    receiver.start()
    server = ServerProcess(tmp_path / "data", workers=0, extra=FAST_RETRY).start()
    try:
        r = requests.post(
            server.url + "/webhooks",
            json={"url": receiver.url, "secret": SECRET, "events": ["meeting.finalizing"]},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        hook = r.json()["id"]
    finally:
        server.stop()
    # The operator takes loopback off the allowed networks: the registered hook stays, but
    # no connection is made to it any more.
    default = [a for a in FAST_RETRY if a not in ("--webhook-allow-networks", "127.0.0.1/32")]
    server = ServerProcess(tmp_path / "data", workers=0, extra=default).start()
    try:
        _finalize_a_meeting(server.url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = _deliveries(server.url, hook)
            if rows and rows[0]["attempts"] >= 2:
                break
            time.sleep(0.1)
        assert "not a public address" in rows[0]["last_error"]
        assert receiver.requests == []
    finally:
        server.stop()
        receiver.stop()
