"""Clients that send slowly or malformed at the HTTP level: a request head has a deadline, an
upload body a minimum rate, a JSON body a time limit, and what aiohttp's parser refuses is
answered with the same JSON error body as everything else."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from tests.conftest import TUS, tus_create
from tests.server_process import ServerProcess

pytestmark = pytest.mark.storage_free


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("slow") / "data"
    server = ServerProcess(
        data,
        extra=["--header-timeout-seconds", "2", "--read-timeout-seconds", "3"],
    ).start()
    yield server
    server.stop()


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("Content-Length", "0"))
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            break
        body += more
    return int(lines[0].split()[1]), headers, body


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_a_hundred_connections_trickling_headers_are_closed(strict_server: ServerProcess) -> None:
    sockets = [_connect(strict_server) for _ in range(100)]
    stop = threading.Event()

    def trickle() -> None:
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
        for i in range(len(head)):
            if stop.wait(0.5):
                return
            for s in sockets:
                try:
                    s.send(head[i : i + 1])
                except OSError:
                    pass

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        started = time.monotonic()
        # Meanwhile the server answers everyone else at once.
        assert requests.get(f"{strict_server.url}/healthz", timeout=2).status_code == 200
        assert all(_closed_within(s, 8.0) for s in sockets)
        # Closed by the 2 s header deadline, not after their 1000+ bytes at 2 bytes/s.
        assert time.monotonic() - started < 8.0
    finally:
        stop.set()
        sender.join()
        for s in sockets:
            s.close()
    assert requests.get(f"{strict_server.url}/healthz", timeout=2).status_code == 200


def test_an_idle_connection_is_closed_but_a_quick_one_is_served(
    strict_server: ServerProcess,
) -> None:
    idle = _connect(strict_server)
    assert _closed_within(idle, 6.0)
    quick = _connect(strict_server)
    quick.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    status, _, body = _response(quick)
    assert status == 200 and json.loads(body) == {"status": "ok"}
    quick.close()


def test_an_upload_body_below_the_minimum_rate_is_ended_and_kept(
    strict_server: ServerProcess,
) -> None:
    location = tus_create(strict_server.url, 1000).headers["Location"]
    path = urlparse(location).path
    sock = _connect(strict_server)
    sock.sendall(
        (
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            "Content-Length: 1000\r\n\r\n"
        ).encode()
    )
    started = time.monotonic()
    sent = 0
    sock.settimeout(0.4)
    status = None
    while time.monotonic() - started < 20:
        try:  # a byte every 0.4 s: never idle for the 3 s read timeout, far below 500 B/s
            sock.send(b"x")
            sent += 1
        except OSError:
            break
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except TimeoutError:
            continue
    sock.settimeout(10)
    status, headers, body = _response(sock)
    sock.close()
    assert status == 408
    assert json.loads(body)["error"]["code"] == "ERR_BODY_TOO_SLOW"
    assert 9 <= time.monotonic() - started < 15  # after the first 10 s window
    head = requests.head(location, headers=TUS, timeout=5)
    # What arrived is kept, as tus asks: the client resumes from there.
    assert 0 < int(head.headers["Upload-Offset"]) <= sent


def test_a_json_body_sent_slowly_times_out_and_creates_nothing(
    strict_server: ServerProcess,
) -> None:
    sock = _connect(strict_server)
    body = b'{"tracks": ["mic"], "external_id": "slow-1"}'
    sock.sendall(
        b"POST /meetings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    started = time.monotonic()
    sock.settimeout(0.3)
    for i in range(len(body) - 1):  # all but the last byte, slowly
        sock.send(body[i : i + 1])
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except TimeoutError:
            pass
    sock.settimeout(10)
    status, _, reply = _response(sock)
    sock.close()
    assert status == 408
    assert json.loads(reply)["error"]["code"] == "ERR_READ_TIMEOUT"
    assert time.monotonic() - started < 8
    # Nothing was created: the same external_id now makes a new meeting (201, not 200).
    created = requests.post(
        f"{strict_server.url}/meetings", json={"tracks": ["mic"], "external_id": "slow-1"}
    )
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("what", "request_bytes"),
    [
        (
            "header too long",
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        ),
        ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "too many headers",
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
            + b"\r\n",
        ),
        ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
    ],
)
def test_what_the_http_parser_refuses_gets_a_json_error(
    strict_server: ServerProcess, what: str, request_bytes: bytes
) -> None:
    sock = _connect(strict_server)
    sock.sendall(request_bytes)
    status, headers, body = _response(sock)
    sock.close()
    assert status == 400, what
    assert headers["Content-Type"].startswith("application/json"), what
    error = json.loads(body)["error"]
    assert error["code"] == "ERR_BAD_REQUEST" and error["message"], what
    assert requests.get(f"{strict_server.url}/healthz", timeout=2).status_code == 200


def test_the_limits_have_flags(tmp_path: Path) -> None:
    # Defaults apply without flags; the flags change them (seen in the 408 of a slow body
    # through ROLLSCRIBE_MIN_BODY_RATE=0, which turns the minimum off).
    server = ServerProcess(
        tmp_path / "data",
        extra=["--read-timeout-seconds", "30"],
        env={"ROLLSCRIBE_MIN_BODY_RATE": "0", "ROLLSCRIBE_HEADER_TIMEOUT_SECONDS": "60"},
    ).start()
    try:
        location = tus_create(server.url, 20).headers["Location"]
        path = urlparse(location).path
        sock = _connect(server)
        sock.sendall(
            (
                f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
                "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                "Content-Length: 20\r\n\r\n"
            ).encode()
        )
        for _ in range(20):  # 20 bytes over 12 s: below 500 B/s, allowed with no minimum
            sock.send(b"y")
            time.sleep(0.6)
        status, _, _ = _response(sock)
        sock.close()
        assert status == 204
    finally:
        server.stop()
