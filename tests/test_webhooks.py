"""Write-back that survives a downstream outage: a real receiver that is down, then fails,
then recovers, with the server SIGKILLed in the middle; dead letters and replay."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from aiohttp import web

from tests.conftest import create_meeting
from tests.server_process import ServerProcess, free_port
from tests.test_backlog import metric
from tests.test_end_to_end import read_events, upload_segment, wait_state

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver:
    """An aiohttp server on loopback whose answer the test chooses; records every request."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.mode = 200
        self.redirect_to: str | None = None
        self.requests: list[tuple[int, dict[str, str], bytes]] = []  # (answer, headers, body)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        answer = self.mode
        self.requests.append((answer, dict(request.headers), body))
        if self.redirect_to:
            return web.Response(status=302, headers={"Location": self.redirect_to})
        return web.Response(status=answer)

    def _run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        async def go() -> None:
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, self.host, self.port).start()

        self._run(go())

    def stop(self) -> None:
        if self.runner is not None:
            self._run(self.runner.cleanup())

    def delivered(self) -> list[dict]:
        return [json.loads(b) | {"_headers": h} for a, h, b in self.requests if a == 200]


def verify(headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split(" "))


FAST_RETRY = [
    "--webhook-retry-base-seconds",
    "0.2",
    "--webhook-retry-max-seconds",
    "1",
    # Receivers here are on loopback, which webhooks may not reach unless allowed.
    "--webhook-allow-networks",
    "127.0.0.1/32",
]


@pytest.fixture(scope="module")
def allowing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No workers; webhooks may reach 127.0.0.1 (and nothing else that is not public)."""
    server = ServerProcess(
        tmp_path_factory.mktemp("webhooks") / "data", workers=0, extra=FAST_RETRY
    ).start()
    yield server
    server.stop()


def _subscribe(base: str, url: str, events: list[str]) -> str:
    r = requests.post(
        base + "/webhooks", json={"url": url, "secret": SECRET, "events": events}, timeout=10
    )
    assert r.status_code == 201, r.text
    assert "secret" not in r.json()
    return r.json()["id"]


@pytest.mark.crash
def test_outage_500s_and_restart_lose_nothing_and_keep_order(tmp_path, jfk_segments):
    receiver = Receiver()  # not listening yet: connections are refused
    server = ServerProcess(tmp_path / "data", workers=1, extra=FAST_RETRY).start()
    try:
        base = server.url
        types = ["chunk.transcribed", "meeting.finalizing", "meeting.completed"]
        hook = _subscribe(base, receiver.url, types)
        meetings = []
        for _ in range(2):
            meeting_id = create_meeting(base, tracks=["mic"])["id"]
            for s in jfk_segments[5.0]:
                upload_segment(base, meeting_id, "mic", s, s.start_ms)
            requests.post(
                f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": {"mic": 2}}, timeout=10
            )
            meetings.append(meeting_id)
        for meeting_id in meetings:
            wait_state(base, meeting_id, "complete")
        expected = {
            m: [e["id"] for e in read_events(base, m) if e["type"] in types] for m in meetings
        }
        time.sleep(1.0)
        pending = requests.get(f"{base}/webhooks/{hook}/deliveries", timeout=10).json()
        assert pending["deliveries"] and all(
            d["status"] == "pending" for d in pending["deliveries"]
        )
        assert any(
            d["attempts"] > 0 and "Connect" in (d["last_error"] or "")
            for d in pending["deliveries"]
        )

        receiver.mode = 500
        receiver.start()
        deadline = time.monotonic() + 20
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        assert receiver.requests and not receiver.delivered()

        text = requests.get(base + "/metrics", timeout=10).text
        assert metric(text, "rollscribe_webhook_oldest_undelivered_age_seconds") > 1.0
        assert metric(text, "rollscribe_webhook_deliveries", '{status="pending"}') > 0
        server.kill()  # SIGKILL in the middle of the outage
        server.start()
        receiver.mode = 200
        want = {f"msg_{i}" for ids in expected.values() for i in ids}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if want <= {d["id"] for d in receiver.delivered()}:
                break
            time.sleep(0.2)
        delivered = receiver.delivered()
        assert want <= {d["id"] for d in delivered}, "an event was lost"
        assert {d["id"] for d in delivered} == want  # and nothing else was sent
        for _, headers, body in receiver.requests:
            assert verify(headers, body), "bad signature"
            assert headers["webhook-id"] == json.loads(body)["id"]
        bodies: dict[str, bytes] = {}
        for _, headers, body in receiver.requests:  # duplicates only with the same id
            previous = bodies.setdefault(headers["webhook-id"], body)
            assert json.loads(previous)["data"] == json.loads(body)["data"]
        for meeting_id, ids in expected.items():  # in order per meeting
            first_seen: list[int] = []
            for d in delivered:
                event_id = int(d["id"].removeprefix("msg_"))
                if d["data"]["meeting_id"] == meeting_id and event_id not in first_seen:
                    first_seen.append(event_id)
            assert first_seen == ids
        text = requests.get(base + "/metrics", timeout=10).text
        assert metric(text, "rollscribe_webhook_deliveries", '{status="delivered"}') == len(want)
        assert metric(text, "rollscribe_webhook_deliveries", '{status="pending"}') == 0
    finally:
        server.stop()
        receiver.stop()


def test_permanent_4xx_goes_to_dead_letter_and_replay_delivers_it(tmp_path):
    receiver = Receiver()
    receiver.mode = 410
    receiver.start()
    server = ServerProcess(tmp_path / "data", extra=FAST_RETRY).start()
    try:
        base = server.url
        hook = _subscribe(base, receiver.url, ["meeting.finalizing", "meeting.completed"])
        meeting_id = create_meeting(base)["id"]
        requests.post(f"{base}/meetings/{meeting_id}/finalize", json={"last_seq": {}}, timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            dead = requests.get(
                f"{base}/webhooks/{hook}/deliveries?status=dead", timeout=10
            ).json()["deliveries"]
            if len(dead) == 2:
                break
            time.sleep(0.2)
        assert [d["type"] for d in dead] == ["meeting.finalizing", "meeting.completed"]
        assert all(d["last_status"] == 410 and d["attempts"] == 1 for d in dead)
        tried = len(receiver.requests)
        time.sleep(1.0)
        assert len(receiver.requests) == tried  # a permanent failure is not retried
        receiver.mode = 200
        r = requests.post(f"{base}/webhooks/{hook}/replay", timeout=10)
        assert r.status_code == 202 and r.json() == {"replayed": 2}
        deadline = time.monotonic() + 20
        while len(receiver.delivered()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [d["type"] for d in receiver.delivered()] == [
            "meeting.finalizing",
            "meeting.completed",
        ]
        states = requests.get(f"{base}/webhooks/{hook}/deliveries", timeout=10).json()
        assert {d["status"] for d in states["deliveries"]} == {"delivered"}
        assert (
            requests.post(f"{base}/webhooks/{hook}/deliveries/1/replay", timeout=10).status_code
            == 409
        )
    finally:
        server.stop()
        receiver.stop()


def test_webhook_bad_input(allowing_server):
    base = allowing_server.url
    good = {"url": "http://127.0.0.1:9/x", "secret": SECRET, "events": ["meeting.completed"]}
    for change in (
        {"url": "ftp://x"},
        {"url": 5},
        {"secret": "nope"},
        {"secret": "whsec_!!!"},
        {"secret": "whsec_" + base64.b64encode(b"x").decode()},
        {"events": []},
        {"events": ["meeting.exploded"]},
    ):
        r = requests.post(base + "/webhooks", json={**good, **change}, timeout=10)
        assert r.status_code == 400, change
        assert r.json()["error"]["code"] == "ERR_INVALID_FIELD"
    assert requests.get(base + "/webhooks/wh_nope/deliveries", timeout=10).status_code == 404
    hook = _subscribe(base, good["url"], good["events"])
    listed = requests.get(base + "/webhooks", timeout=10).json()["webhooks"]
    assert hook in [h["id"] for h in listed]
    assert requests.delete(f"{base}/webhooks/{hook}", timeout=10).status_code == 204
    assert requests.delete(f"{base}/webhooks/{hook}", timeout=10).status_code == 404
